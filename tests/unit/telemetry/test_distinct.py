"""The distinct-device counter: its error at scale, its small counts, merging as a union, and the
bytes a snapshot stores."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.telemetry.distinct import EXACT_LIMIT, MAX_RANK, REGISTERS, STANDARD_ERROR, DistinctCounter


def counter_of(keys: list[str] | range | set[str]) -> DistinctCounter:
    counter = DistinctCounter()
    for key in keys:
        counter.add(str(key))
    return counter


def device_ids(n: int, *, prefix: str = "device") -> list[str]:
    return [f"{prefix}-{i:06d}" for i in range(n)]


def test_the_stated_standard_error() -> None:
    assert REGISTERS == 1024
    assert STANDARD_ERROR == pytest.approx(0.0325, abs=1e-4)


def test_an_empty_counter_counts_nothing() -> None:
    assert DistinctCounter().estimate() == 0


@pytest.mark.parametrize("n", [3_000, 10_000, 100_000])
def test_large_counts_are_within_three_standard_errors(n: int) -> None:
    assert abs(counter_of(device_ids(n)).estimate() - n) <= 3 * STANDARD_ERROR * n


def test_small_counts_are_exact_or_within_one() -> None:
    """One fleet's ids, counted as they arrive; the next test measures how typical that is."""
    counter = DistinctCounter()
    for n, key in enumerate(device_ids(50), start=1):
        counter.add(key)
        assert abs(counter.estimate() - n) <= 1, n


@pytest.mark.parametrize(("n", "share"), [(10, 0.98), (30, 0.88), (50, 0.8)])
def test_small_counts_of_any_key_set_are_mostly_within_one(n: int, share: float) -> None:
    """Two devices in one register count as one, so exactness is a matter of luck. Measured over
    3000 key sets: 99.9 % of sets of 10 devices are counted within one, 94 % of 30, 89 % of 50
    (the thresholds are about 3 standard errors of 300 trials below those)."""
    trials = 300
    within = sum(abs(counter_of(device_ids(n, prefix=f"set{t}")).estimate() - n) <= 1 for t in range(trials))
    assert within >= share * trials


def test_adding_a_key_again_changes_nothing() -> None:
    counter = counter_of(device_ids(20))
    before = counter.to_bytes()
    for key in device_ids(20):
        counter.add(key)
    assert counter.to_bytes() == before


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    first=st.sets(st.text(min_size=1, max_size=12), max_size=200),
    second=st.sets(st.text(min_size=1, max_size=12), max_size=200),
)
def test_merging_two_counters_is_the_counter_of_the_union(first: set[str], second: set[str]) -> None:
    merged = counter_of(first)
    merged.merge(counter_of(second))
    assert merged == counter_of(first | second)


def test_merging_is_idempotent_and_leaves_the_other_alone() -> None:
    a, b = counter_of(device_ids(500)), counter_of(device_ids(300, prefix="other"))
    b_before = b.to_bytes()
    a.merge(b)
    once = a.to_bytes()
    a.merge(b)
    assert a.to_bytes() == once
    assert b.to_bytes() == b_before
    assert abs(a.estimate() - 800) <= 3 * STANDARD_ERROR * 800


def test_bytes_round_trip_through_a_json_snapshot() -> None:
    counter = counter_of(device_ids(1234))
    raw = counter.to_bytes()
    assert len(raw) == REGISTERS
    snapshot = json.dumps({"devices": base64.b64encode(raw).decode()})
    restored = DistinctCounter.from_bytes(base64.b64decode(json.loads(snapshot)["devices"]))
    assert restored == counter
    assert restored.estimate() == counter.estimate()
    restored.add("one-more-device")  # the restored registers are its own, not the snapshot's
    assert counter.to_bytes() == raw


def test_equality_is_by_registers() -> None:
    assert counter_of(["a", "b"]) == counter_of(["b", "a", "a"])
    assert counter_of(["a"]) != counter_of(["b"])
    assert DistinctCounter() != b"\x00" * REGISTERS


@pytest.mark.parametrize("data", [b"", b"\x00" * (REGISTERS - 1), b"\x00" * (REGISTERS + 1)])
def test_bytes_of_the_wrong_length_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match=f"{REGISTERS} bytes"):
        DistinctCounter.from_bytes(data)


def test_a_register_over_the_largest_rank_is_refused() -> None:
    with pytest.raises(ValueError, match="rank"):
        DistinctCounter.from_bytes(bytes([MAX_RANK + 1]) + b"\x00" * (REGISTERS - 1))


@settings(max_examples=50, deadline=None)
@given(st.sets(st.text(min_size=1, max_size=12), max_size=300))
def test_the_sparse_form_round_trips(keys: set[str]) -> None:
    counter = DistinctCounter()
    for key in keys:
        counter.add(key)
    pairs = counter.to_sparse()
    assert len(pairs) == sum(1 for b in counter.to_bytes() if b)
    back = DistinctCounter.from_sparse(json.loads(json.dumps(pairs)))
    assert back.to_bytes() == counter.to_bytes() and back.exact_hashes() is None  # the registers only


@pytest.mark.parametrize("pair", [[REGISTERS, 1], [-1, 1], [0, MAX_RANK + 1]])
def test_a_sparse_register_outside_the_counter_is_refused(pair: list[int]) -> None:
    with pytest.raises(ValueError, match="cannot be part of a distinct counter"):
        DistinctCounter.from_sparse([pair])


def test_up_to_the_limit_counts_are_exact_and_survive_merges_and_json() -> None:
    first, second = DistinctCounter(), DistinctCounter()
    for i in range(150):
        first.add(f"device-{i}")
    for i in range(100, 240):
        second.add(f"device-{i}")
    assert (first.estimate(), second.estimate()) == (150, 140)
    first.merge(second)
    assert first.estimate() == 240  # the union, exactly
    hashes = first.exact_hashes()
    assert hashes is not None
    assert DistinctCounter.from_hashes(json.loads(json.dumps(hashes))) == first


def test_past_the_limit_the_registers_take_over() -> None:
    counter = DistinctCounter()
    for i in range(EXACT_LIMIT + 1):
        counter.add(f"d{i}")
    assert counter.exact_hashes() is None
    assert abs(counter.estimate() - (EXACT_LIMIT + 1)) <= 3 * STANDARD_ERROR * (EXACT_LIMIT + 1)
    small = DistinctCounter()
    small.add("d0")
    small.merge(counter)
    assert small.exact_hashes() is None  # a merge with an estimate is an estimate


@pytest.mark.parametrize("hashes", [[-1], [1 << 64], list(range(EXACT_LIMIT + 1))])
def test_hashes_that_cannot_be_an_exact_counter_are_refused(hashes: list[int]) -> None:
    with pytest.raises(ValueError):
        DistinctCounter.from_hashes(hashes)
