"""What applying blueprints would change (services/blueprints/diff.py), per device group and with why."""

from __future__ import annotations

from typing import Any

import pytest

from services.blueprints.diff import DiffGroup, Running, Target, diff
from services.blueprints.errors import PriorityTie
from shared.messages.blueprint import Blueprint

from .factories import blueprint, device

MODEL = "tiny-embedder"
FLEET = [
    device("r1", "rpi5", fleet="demo"),
    device("r2", "rpi5", fleet="demo"),
    device("j1", "jetson", fleet="demo"),
    device("l1", "rpi5", fleet="demo", site="lab"),
    device("x1", "gateway", fleet="other"),
]
ALIASES = {MODEL: {"stable": "1.1.0", "candidate": "1.2.0"}}
PROFILES = {"rpi5": "rpi5", "jetson": "jetson"}


def demo(**spec: Any) -> Blueprint:
    return blueprint("demo", labels={"fleet": "demo"}, **({"profiles": PROFILES} | spec))


def on(version: str, device_class: str) -> Running:
    """Running `version` in the variant built with the class's profile (the base for an unprofiled class)."""
    profile = PROFILES.get(device_class)
    return Running(model=MODEL, version=version, variant=profile or "base", profile=profile)


def fleet_on(version: str) -> dict[str, Running]:
    return {d.device_id: on(version, d.device_class) for d in FLEET if d.labels.get("fleet") == "demo"}


def summary(groups: list[DiffGroup]) -> list[tuple[str | None, str | None, str, str, tuple[str, ...]]]:
    return [(g.blueprint, g.override, g.device_class, g.reason, g.devices) for g in groups]


def test_a_new_blueprint_groups_devices_by_class_with_the_class_profile() -> None:
    groups = diff([], [demo()], FLEET, running={}, aliases=ALIASES)
    assert summary(groups) == [
        ("demo", None, "jetson", "new blueprint", ("j1",)),
        ("demo", None, "rpi5", "new blueprint", ("l1", "r1", "r2")),
    ]
    assert groups[0].before is None
    assert groups[0].after == Target(model=MODEL, version="1.1.0", profile="jetson", settings=None)
    assert all(g.changes for g in groups)


def test_applying_what_is_stored_changes_nothing() -> None:
    groups = diff([demo()], [demo()], FLEET, running=fleet_on("1.1.0"), aliases=ALIASES)
    assert {g.reason for g in groups} == {"unchanged"}
    assert not any(g.changes for g in groups)


def test_a_new_blueprint_over_devices_already_on_its_target_changes_nothing() -> None:
    groups = diff([], [demo()], FLEET, running=fleet_on("1.1.0"), aliases=ALIASES)
    assert {g.reason for g in groups} == {"unchanged"}


def test_the_alias_moving_shows_from_and_to_per_class() -> None:
    groups = diff([demo()], [demo()], FLEET, running=fleet_on("1.0.0"), aliases=ALIASES)
    assert summary(groups) == [
        ("demo", None, "jetson", "track moved", ("j1",)),
        ("demo", None, "rpi5", "track moved", ("l1", "r1", "r2")),
    ]
    assert (groups[1].before, groups[1].after) == (
        Running(model=MODEL, version="1.0.0", variant="rpi5", profile="rpi5"),
        Target(model=MODEL, version="1.1.0", profile="rpi5", settings=None),
    )


def test_a_changed_track_says_what_it_was() -> None:
    groups = diff([demo()], [demo(track="candidate")], FLEET, running=fleet_on("1.1.0"), aliases=ALIASES)
    assert {(g.reason, g.after.version if g.after else None) for g in groups} == {
        ("track changed (was tiny-embedder@stable)", "1.2.0")
    }


def test_a_pin_holds_its_group_and_says_so() -> None:
    pinned = demo(overrides=[{"name": "site-lab", "match": {"site": "lab"}, "pin": "1.0.0"}])
    groups = diff([pinned], [pinned], FLEET, running=fleet_on("1.1.0"), aliases=ALIASES)
    assert summary(groups) == [
        ("demo", None, "jetson", "unchanged", ("j1",)),
        ("demo", None, "rpi5", "unchanged", ("r1", "r2")),
        ("demo", "site-lab", "rpi5", "pinned by override site-lab", ("l1",)),
    ]
    assert groups[2].after == Target(model=MODEL, version="1.0.0", profile="rpi5", settings=None)


def test_a_pinned_group_already_on_its_pin_is_unchanged_when_the_track_moves() -> None:
    pinned = demo(overrides=[{"name": "site-lab", "match": {"site": "lab"}, "pin": "1.0.0"}])
    groups = diff([pinned], [pinned], FLEET, running=fleet_on("1.0.0"), aliases=ALIASES)
    assert [(g.override, g.reason) for g in groups] == [
        (None, "track moved"),
        (None, "track moved"),
        ("site-lab", "unchanged"),
    ]


def test_a_new_profile_for_a_class_rebuilds_only_that_class() -> None:
    before = demo(profiles={"rpi5": "rpi5"})
    running = fleet_on("1.1.0") | {"j1": Running(model=MODEL, version="1.1.0")}
    groups = diff([before], [demo()], FLEET, running=running, aliases=ALIASES)
    assert summary(groups)[0] == ("demo", None, "jetson", "profile changed", ("j1",))
    assert groups[0].before == Running(model=MODEL, version="1.1.0", variant="base", profile=None)
    assert {g.reason for g in groups[1:]} == {"unchanged"}


def test_a_class_without_a_profile_accepts_any_variant_of_the_version() -> None:
    groups = diff([demo(profiles={})], [demo(profiles={})], FLEET, running=fleet_on("1.1.0"), aliases=ALIASES)
    assert {g.reason for g in groups} == {"unchanged"}
    assert {g.after.profile for g in groups if g.after} == {None}


def test_changed_settings_are_a_change_of_their_own() -> None:
    def with_config(config: dict[str, Any]) -> Blueprint:
        return demo(overrides=[{"name": "site-lab", "match": {"site": "lab"}, "config": config}])

    groups = diff(
        [with_config({"lang": "en"})], [with_config({"lang": "de"})], FLEET, running=fleet_on("1.1.0"), aliases=ALIASES
    )
    changed = [g for g in groups if g.changes]
    assert summary(changed) == [("demo", "site-lab", "rpi5", "settings changed", ("l1",))]
    assert changed[0].after is not None and changed[0].after.settings is not None


def test_settings_are_identified_by_content_not_by_key_order() -> None:
    def with_config(config: dict[str, Any]) -> Blueprint:
        return demo(overrides=[{"name": "site-lab", "match": {"site": "lab"}, "config": config}])

    groups = diff(
        [with_config({"a": 1, "b": 2})],
        [with_config({"b": 2, "a": 1})],
        FLEET,
        running=fleet_on("1.1.0"),
        aliases=ALIASES,
    )
    assert {g.reason for g in groups} == {"unchanged"}


def test_a_higher_priority_blueprint_takes_devices_over() -> None:
    lab = blueprint("lab", labels={"site": "lab"}, priority=5, track="candidate", profiles=PROFILES)
    groups = diff([demo()], [demo(), lab], FLEET, running=fleet_on("1.1.0"), aliases=ALIASES)
    assert [g for g in summary(groups) if g[0] == "lab"] == [("lab", None, "rpi5", "owner changed (was demo)", ("l1",))]


def test_a_device_no_blueprint_owns_any_more_is_released_and_keeps_what_it_runs() -> None:
    groups = diff([demo()], [], FLEET, running=fleet_on("1.1.0"), aliases=ALIASES)
    assert summary(groups) == [
        (None, None, "jetson", "released (was demo)", ("j1",)),
        (None, None, "rpi5", "released (was demo)", ("l1", "r1", "r2")),
    ]
    assert {g.after for g in groups} == {None}


def test_a_device_enrolled_since_is_not_installed() -> None:
    newcomer = device("r9", "rpi5", fleet="demo")
    groups = diff([demo()], [demo()], [*FLEET, newcomer], running=fleet_on("1.1.0"), aliases=ALIASES)
    assert [g for g in summary(groups) if g[3] != "unchanged"] == [("demo", None, "rpi5", "not installed", ("r9",))]


def test_devices_a_widened_selector_adds_are_newly_selected() -> None:
    jetsons_only = demo(
        selector={"labels": {"fleet": "demo"}, "device_classes": ["jetson"]}, profiles={"jetson": "jetson"}
    )
    groups = diff([jetsons_only], [demo()], FLEET, running=fleet_on("1.1.0"), aliases=ALIASES)
    assert summary(groups) == [
        ("demo", None, "jetson", "unchanged", ("j1",)),
        ("demo", None, "rpi5", "unchanged", ("l1", "r1", "r2")),
    ]
    groups = diff([jetsons_only], [demo()], FLEET, running=fleet_on("1.0.0"), aliases=ALIASES)
    assert [g.reason for g in groups] == ["track moved", "newly selected"]


def test_a_device_on_another_model_says_which() -> None:
    running = fleet_on("1.1.0") | {"r1": Running(model="all-minilm-l6-v2", version="1.1.0")}
    groups = diff([demo()], [demo()], FLEET, running=running, aliases=ALIASES)
    assert [g for g in summary(groups) if g[3] != "unchanged"] == [
        ("demo", None, "rpi5", "runs another model (all-minilm-l6-v2)", ("r1",))
    ]


def test_an_alias_that_is_not_set_rolls_nothing_out() -> None:
    groups = diff([], [demo(track="canary")], FLEET, running={}, aliases=ALIASES)
    assert {(g.reason, g.after.version if g.after else "-") for g in groups} == {("alias not set", None)}


def test_devices_outside_every_blueprint_are_left_out() -> None:
    groups = diff([demo()], [demo()], FLEET, running={}, aliases=ALIASES)
    assert all("x1" not in g.devices for g in groups)


def test_a_tie_in_what_would_be_stored_is_refused() -> None:
    rival = blueprint("rival", labels={"site": "lab"})
    with pytest.raises(PriorityTie, match="blueprints demo and rival have the same priority"):
        diff([demo()], [demo(), rival], FLEET, running={}, aliases=ALIASES)


def test_a_tie_in_what_is_stored_counts_as_no_owner_there() -> None:
    rival = blueprint("rival", labels={"site": "lab"})
    groups = diff([demo(), rival], [demo()], FLEET, running={}, aliases=ALIASES)
    assert [g for g in summary(groups) if "l1" in g[4]] == [("demo", None, "rpi5", "newly selected", ("l1",))]
