"""Which blueprint owns each device (services/blueprints/ownership.py): priority, refused ties, lost
devices, and the first matching override."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.blueprints.errors import DuplicateBlueprint, PriorityTie, Tie
from services.blueprints.ownership import matching_override, require_no_ties, resolve_owners
from shared.messages.blueprint import Blueprint

from .factories import blueprint, device

FLEET = [
    device("b1", "rpi5", fleet="demo", site="berlin"),
    device("b2", "jetson", fleet="demo", site="berlin"),
    device("p1", "rpi5", fleet="demo", site="paris"),
    device("x1", "gateway", fleet="other"),
]


def owners_of(blueprints: list[Blueprint]) -> dict[str, str]:
    return {d: o.blueprint.name for d, o in resolve_owners(blueprints, FLEET).owners.items()}


@pytest.mark.parametrize(
    ("blueprints", "owners"),
    [
        ([], {}),
        ([blueprint("demo", labels={"fleet": "demo"})], {"b1": "demo", "b2": "demo", "p1": "demo"}),
        (
            [
                blueprint("demo", labels={"fleet": "demo"}, priority=1),
                blueprint("berlin", labels={"site": "berlin"}, priority=2),
            ],
            {"b1": "berlin", "b2": "berlin", "p1": "demo"},
        ),
        (
            [
                blueprint("demo", labels={"fleet": "demo"}, priority=3),
                blueprint("berlin", labels={"site": "berlin"}, priority=2),
            ],
            {"b1": "demo", "b2": "demo", "p1": "demo"},
        ),
        (
            [blueprint("all", priority=0), blueprint("demo", labels={"fleet": "demo"}, priority=1)],
            {"b1": "demo", "b2": "demo", "p1": "demo", "x1": "all"},
        ),
        (
            [blueprint("jetsons", selector={"device_classes": ["jetson"]}, priority=5), blueprint("all")],
            {"b1": "all", "b2": "jetsons", "p1": "all", "x1": "all"},
        ),
    ],
)
def test_the_highest_priority_owns_a_device(blueprints: list[Blueprint], owners: dict[str, str]) -> None:
    assert owners_of(blueprints) == owners


def test_the_losers_are_told_which_devices_they_lost_and_to_whom() -> None:
    ownership = resolve_owners(
        [
            blueprint("all"),
            blueprint("demo", labels={"fleet": "demo"}, priority=1),
            blueprint("berlin", labels={"site": "berlin"}, priority=2),
        ],
        FLEET,
    )
    assert ownership.lost == {
        "all": {"b1": "berlin", "b2": "berlin", "p1": "demo"},
        "demo": {"b1": "berlin", "b2": "berlin"},
    }
    assert ownership.devices_of("berlin") == ["b1", "b2"]


def test_an_equal_priority_on_a_device_is_a_tie_nobody_owns() -> None:
    ownership = resolve_owners(
        [
            blueprint("demo", labels={"fleet": "demo"}, priority=1),
            blueprint("berlin", labels={"site": "berlin"}, priority=1),
        ],
        FLEET,
    )
    assert ownership.ties == (Tie(blueprints=("berlin", "demo"), priority=1, devices=("b1", "b2")),)
    assert {d: o.blueprint.name for d, o in ownership.owners.items()} == {"p1": "demo"}
    assert ownership.lost == {}


def test_a_tie_is_refused_naming_the_blueprints_and_the_devices() -> None:
    ownership = resolve_owners(
        [
            blueprint("demo", labels={"fleet": "demo"}, priority=1),
            blueprint("berlin", labels={"site": "berlin"}, priority=1),
        ],
        FLEET,
    )
    with pytest.raises(PriorityTie) as caught:
        require_no_ties(ownership)
    assert str(caught.value) == (
        "blueprints berlin and demo have the same priority (1) and all select devices b1, b2: give one a higher "
        "priority or narrow a selector so that one blueprint owns each device"
    )


def test_a_tie_message_shows_a_few_devices_and_counts_the_rest() -> None:
    tie = Tie(blueprints=("a", "b", "c"), priority=0, devices=tuple(f"d{i}" for i in range(8)))
    assert (
        tie.describe()
        == "blueprints a, b and c have the same priority (0) and all select devices d0, d1, d2, d3, d4 and 3 more"
    )
    assert Tie(blueprints=("a", "b"), priority=0, devices=("d0",)).describe() == (
        "blueprints a and b have the same priority (0) and all select device d0"
    )


def test_a_tie_under_the_winners_priority_is_no_tie() -> None:
    blueprints = [
        blueprint("a", labels={"fleet": "demo"}, priority=1),
        blueprint("b", labels={"fleet": "demo"}, priority=1),
        blueprint("top", labels={"site": "paris"}, priority=9),
    ]
    ownership = resolve_owners(blueprints, [FLEET[2]])
    assert require_no_ties(ownership).owners["p1"].blueprint.name == "top"
    assert ownership.lost == {"a": {"p1": "top"}, "b": {"p1": "top"}}


def test_blueprints_that_select_nothing_are_reported() -> None:
    ownership = resolve_owners(
        [blueprint("demo", labels={"fleet": "demo"}), blueprint("ghost", labels={"fleet": "none"})], FLEET
    )
    assert ownership.unmatched == ("ghost",)


def test_a_name_given_twice_is_refused() -> None:
    with pytest.raises(DuplicateBlueprint, match="blueprint 'demo' is given twice"):
        resolve_owners([blueprint("demo"), blueprint("demo", priority=3)], FLEET)


OVERRIDES = [
    {"name": "berlin-rpi", "match": {"site": "berlin", "tier": "gold"}, "pin": "1.0.0"},
    {"name": "berlin", "match": {"site": "berlin"}, "config": {"lang": "de"}},
    {"name": "gold", "match": {"tier": "gold"}, "pin": "2.0.0"},
]


@pytest.mark.parametrize(
    ("labels", "override"),
    [
        ({"site": "berlin", "tier": "gold"}, "berlin-rpi"),  # matches all three: the first declared wins
        ({"site": "berlin"}, "berlin"),
        ({"site": "paris", "tier": "gold"}, "gold"),
        ({"site": "paris"}, None),
        ({}, None),
    ],
)
def test_the_first_matching_override_applies(labels: dict[str, str], override: str | None) -> None:
    found = matching_override(blueprint("demo", overrides=OVERRIDES), device("d", **labels))
    assert (found.name if found else None) == override


def test_the_owner_carries_its_override() -> None:
    owners = resolve_owners([blueprint("demo", overrides=OVERRIDES)], FLEET).owners
    assert {d: o.override.name if o.override else None for d, o in owners.items()} == {
        "b1": "berlin",
        "b2": "berlin",
        "p1": None,
        "x1": None,
    }


@given(
    priorities=st.lists(st.integers(0, 3), min_size=1, max_size=5),
    picks=st.lists(st.lists(st.booleans(), min_size=5, max_size=5), min_size=4, max_size=4),
)
def test_every_selected_device_is_owned_by_a_top_priority_blueprint_or_tied(
    priorities: list[int], picks: list[list[bool]]
) -> None:
    # Device i carries label b<j>=yes for each blueprint j it should be selected by.
    blueprints = [blueprint(f"b{j}", labels={f"b{j}": "yes"}, priority=p) for j, p in enumerate(priorities)]
    devices = [
        device(f"d{i}", **{f"b{j}": "yes" for j in range(len(priorities)) if row[j]}) for i, row in enumerate(picks)
    ]
    ownership = resolve_owners(blueprints, devices)
    tied = {d for tie in ownership.ties for d in tie.devices}
    for i, row in enumerate(picks):
        selecting = [j for j in range(len(priorities)) if row[j]]
        device_id = f"d{i}"
        if not selecting:
            assert device_id not in ownership.owners and device_id not in tied
            continue
        top = max(priorities[j] for j in selecting)
        winners = [j for j in selecting if priorities[j] == top]
        if len(winners) > 1:
            assert device_id in tied and device_id not in ownership.owners
        else:
            assert ownership.owners[device_id].blueprint.name == f"b{winners[0]}"
            losers = {f"b{j}" for j in selecting if j != winners[0]}
            assert {name for name, lost in ownership.lost.items() if device_id in lost} == losers
