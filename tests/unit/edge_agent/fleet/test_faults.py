"""Fault plans: parsing with clear errors, exact and disjoint assignment."""

from __future__ import annotations

from collections import Counter

import pytest

from services.edge_agent.fleet.errors import FleetConfigError
from services.edge_agent.fleet.faults import Fault, assign_faults, parse_faults


def test_shares_and_counts_parse() -> None:
    plan = parse_faults("offline=5%,slow=10%,download-fail=2%,corrupt=3,crash=0.5%")
    assert plan.counts(1000) == {
        Fault.OFFLINE: 50,
        Fault.SLOW: 100,
        Fault.DOWNLOAD_FAIL: 20,
        Fault.CORRUPT: 3,
        Fault.CRASH: 5,
    }
    assert plan.describe() == "offline=5%,slow=10%,download_fail=2%,corrupt=3,crash=0.5%"


@pytest.mark.parametrize("text", ["", "  ", "none", "NONE"])
def test_no_faults(text: str) -> None:
    assert parse_faults(text).counts(10) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gremlins=5%", "unknown fault 'gremlins'; known faults: offline, slow, download_fail, flaky, corrupt, crash"),
        ("offline", "is not fault=N% or fault=COUNT"),
        ("offline=", "is not fault=N% or fault=COUNT"),
        ("offline=x%", "'x' is not a number"),
        ("offline=150%", "between 0% and 100%"),
        ("offline=-1", "cannot be negative"),
        ("offline=0.5", "give a share with %"),
        ("offline=1%,offline=2%", "appears twice"),
        ("offline=60%,slow=50%", "add up to 110%"),
    ],
)
def test_bad_plans_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(FleetConfigError, match=message):
        parse_faults(text)


def test_a_plan_needing_more_devices_than_the_fleet_is_refused() -> None:
    with pytest.raises(FleetConfigError, match="need 12 devices but the fleet has 10"):
        parse_faults("offline=7,crash=5").counts(10)


def test_assignment_is_exact_disjoint_and_repeatable() -> None:
    plan = parse_faults("offline=5%,slow=10%,corrupt=1%,crash=7")
    faults = assign_faults(1000, plan, seed=3)
    assert Counter(faults) == {None: 833, Fault.OFFLINE: 50, Fault.SLOW: 100, Fault.CORRUPT: 10, Fault.CRASH: 7}
    assert assign_faults(1000, plan, seed=3) == faults
    assert assign_faults(1000, plan, seed=4) != faults
