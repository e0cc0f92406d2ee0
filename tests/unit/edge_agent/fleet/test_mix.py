"""Class mix parsing, splitting and spreading."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from services.edge_agent.fleet.classes import load_classes
from services.edge_agent.fleet.config import DEFAULT_MIX
from services.edge_agent.fleet.errors import FleetConfigError
from services.edge_agent.fleet.mix import allocate, assign_classes, parse_mix, stratified_sample

CLASSES = load_classes()


def test_default_mix_parses_to_relative_weights_in_order() -> None:
    assert parse_mix(DEFAULT_MIX, CLASSES) == {"rpi5": 60.0, "jetson": 30.0, "gateway": 10.0}
    assert parse_mix(" jetson = 1 , rpi5=3% ", CLASSES) == {"jetson": 1.0, "rpi5": 3.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the mix is empty"),
        ("rpi5", "is not class=weight"),
        ("rpi5=", "is not class=weight"),
        ("=5", "is not class=weight"),
        ("rpi5=many", "'many' of class 'rpi5' is not a number"),
        ("rpi5=0", "must be a positive number"),
        ("rpi5=-3", "must be a positive number"),
        ("rpi5=nan", "must be a positive number"),
        ("toaster=5", "unknown device class 'toaster'; known classes: gateway, jetson, rpi5"),
        ("rpi5=1,rpi5=2", "appears twice"),
    ],
)
def test_bad_mixes_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(FleetConfigError, match=message.replace("(", r"\(")):
        parse_mix(text, CLASSES)


def test_allocate_uses_largest_remainder_and_sums_to_the_total() -> None:
    assert allocate(7, {"a": 60, "b": 30, "c": 10}) == {"a": 4, "b": 2, "c": 1}
    assert allocate(10_000, {"a": 60, "b": 30, "c": 10}) == {"a": 6000, "b": 3000, "c": 1000}
    for total in range(0, 50):
        assert sum(allocate(total, {"a": 1, "b": 1, "c": 1}).values()) == total


def test_classes_are_spread_over_the_fleet_not_in_blocks() -> None:
    classes = assign_classes(100, {"rpi5": 60, "jetson": 30, "gateway": 10})
    assert Counter(classes) == {"rpi5": 60, "jetson": 30, "gateway": 10}
    assert set(classes[:10]) == {"rpi5", "jetson", "gateway"}
    assert assign_classes(100, {"rpi5": 60, "jetson": 30, "gateway": 10}) == classes  # no randomness


def test_stratified_sample_gives_every_class_a_real_inference_device() -> None:
    classes = assign_classes(1000, {"rpi5": 98, "jetson": 1, "gateway": 1})
    picked = stratified_sample(classes, 5)
    assert len(picked) == 5
    assert {classes[i] for i in picked} == {"rpi5", "jetson", "gateway"}
    assert stratified_sample(classes, 0) == []
    assert len(stratified_sample(classes[:3], 50)) == 3


def test_a_random_stratified_sample_is_spread_over_the_classes_and_repeatable() -> None:
    classes = assign_classes(100, {"rpi5": 60, "jetson": 30, "gateway": 10})
    picked = stratified_sample(classes, 50, rng=random.Random(1))
    assert Counter(classes[i] for i in picked) == {"rpi5": 30, "jetson": 15, "gateway": 5}
    assert picked == stratified_sample(classes, 50, rng=random.Random(1))
    assert picked != stratified_sample(classes, 50)  # not simply the first devices of each class
