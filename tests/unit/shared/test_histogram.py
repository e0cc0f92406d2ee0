"""The exponential histogram's promise: any quantile of windows merged from many devices is within
the stated relative error of the exact quantile of all their raw latencies."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import histogram
from shared.histogram import ExponentialHistogram, bucket_index, bucket_lower, relative_error

LATENCY = st.floats(min_value=0.01, max_value=60_000.0, allow_nan=False, allow_infinity=False)
DEVICES = st.lists(st.lists(LATENCY, min_size=1, max_size=200), min_size=1, max_size=30)
QUANTILES = (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0)


def exact(values: list[float], q: float) -> float:
    """The value at rank ceil(q * n) of the sorted values (what `quantile` promises to approximate)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def test_the_stated_bounds() -> None:
    assert relative_error(3) == pytest.approx(0.0433, abs=1e-4)
    assert relative_error(4) == pytest.approx(0.0217, abs=1e-4)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(value=LATENCY, scale=st.integers(min_value=-2, max_value=6))
def test_every_value_lands_in_the_bucket_that_holds_it(value: float, scale: int) -> None:
    index = bucket_index(value, scale)
    assert bucket_lower(index, scale) < value <= bucket_lower(index + 1, scale)


@pytest.mark.parametrize("scale", [-1, 0, 3])
def test_a_boundary_is_the_upper_end_of_its_bucket(scale: int) -> None:
    """Buckets are upper-inclusive, as OpenTelemetry's: a value on a boundary belongs below it."""
    for i in range(-8, 24):
        boundary = bucket_lower(i, scale)
        assert bucket_index(boundary, scale) == i - 1


@settings(max_examples=200, deadline=None, derandomize=True)
@given(devices=DEVICES, scale=st.sampled_from([3, 4]))
def test_merged_quantiles_are_within_the_bound_of_the_exact_ones(devices: list[list[float]], scale: int) -> None:
    fleet = ExponentialHistogram(scale=scale)
    for window in devices:
        fleet.merge(histogram.of(window, scale=scale))
    raw = [v for window in devices for v in window]
    assert fleet.count == len(raw)
    bound = relative_error(fleet.scale)  # the scale may have been lowered to fit MAX_BUCKETS
    for q in QUANTILES:
        want = exact(raw, q)
        assert abs(fleet.quantile(q) - want) <= bound * want * (1 + 1e-9), (q, fleet.scale)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(devices=DEVICES)
def test_merging_windows_of_different_scales_keeps_the_coarser_bound(devices: list[list[float]]) -> None:
    fleet = ExponentialHistogram(scale=4)
    for i, window in enumerate(devices):
        fleet.merge(histogram.of(window, scale=3 if i % 2 else 4))
    raw = [v for window in devices for v in window]
    assert fleet.scale <= 3 or len(devices) == 1
    for q in QUANTILES:
        want = exact(raw, q)
        assert abs(fleet.quantile(q) - want) <= relative_error(fleet.scale) * want * (1 + 1e-9)


def test_a_wide_spread_lowers_the_scale_to_stay_within_the_bucket_limit() -> None:
    wide = histogram.of([0.001, 1.0, 1_000.0, 1_000_000.0], scale=8)
    assert len(wide.counts) <= histogram.MAX_BUCKETS and wide.scale < 8
    assert wide.quantile(1.0) == pytest.approx(1_000_000.0, rel=relative_error(wide.scale))


def test_zero_latencies_and_bad_input() -> None:
    h = ExponentialHistogram(zero_threshold=0.0)
    h.record(0.0, count=3)
    h.record(5.0)
    assert h.count == 4 and h.quantile(0.5) == 0.0 and h.quantile(1.0) == pytest.approx(5.0, rel=relative_error(3))
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError):
            h.record(bad)
    with pytest.raises(ValueError, match="no values"):
        ExponentialHistogram().quantile(0.5)
    with pytest.raises(ValueError, match="q must be"):
        h.quantile(1.5)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=5e3), max_size=60),
    st.lists(st.floats(min_value=0, max_value=5e3), max_size=60),
    st.integers(min_value=0, max_value=5),
)
def test_merging_two_histograms_equals_recording_both_sets(a: list[float], b: list[float], scale: int) -> None:
    merged = histogram.of(a, scale=scale)
    merged.merge(histogram.of(b, scale=scale))
    both = histogram.of(a + b, scale=scale)
    for h in (merged, both):  # the same buckets, whichever path merged them (trailing zeros aside)
        while h.counts and h.counts[-1] == 0:
            h.counts.pop()
        while h.counts and h.counts[0] == 0:
            h.counts.pop(0)
            h.offset += 1
    assert (merged.scale, merged.zero_count, merged.offset, merged.counts) == (
        both.scale,
        both.zero_count,
        both.offset,
        both.counts,
    )
