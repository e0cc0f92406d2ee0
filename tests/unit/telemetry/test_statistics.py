"""The gate and drift statistics against oracles: scipy's Mann-Whitney on the same ties, the exact
Hodges-Lehmann estimate of the raw samples, known shifts of log-normal latencies, hand-computed
PSI, scipy's Jensen-Shannon distance, and moments of concatenated samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.stats import mannwhitneyu, norm

from services.telemetry.statistics import (
    PSI_THRESHOLD,
    LatencyComparison,
    Moments,
    compare_latency,
    histogram_bins,
    jensen_shannon,
    non_inferior,
    psi,
    standardized_shift,
)
from shared import histogram
from shared.histogram import ExponentialHistogram, base, bucket_index

LATENCY = st.one_of(st.just(0.0), st.floats(min_value=0.01, max_value=60_000.0))
SAMPLE = st.lists(LATENCY, min_size=1, max_size=80)
SCALE = st.sampled_from([0, 2, 3, 4])
COUNTS = st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=20)


def lognormal(seed: int, n: int, *, factor: float = 1.0, sigma: float = 0.6) -> list[float]:
    """Latencies around 20 ms, every one multiplied by `factor`."""
    rng = np.random.default_rng(seed)
    return [float(v) for v in rng.lognormal(3.0, sigma, n) * factor]


def stratified(seed: int, n: int, *, factor: float = 1.0, sigma: float = 0.6) -> list[float]:
    """Log-normal latencies with one draw in each of `n` equal-probability strata: a sample whose
    shape is the distribution's, so what is left of an estimate's error is the binning's."""
    rng = np.random.default_rng(seed)
    shares = (np.arange(n) + rng.random(n)) / n
    return [float(v) for v in np.exp(3.0 + sigma * norm.ppf(shares)) * factor]


def representatives(values: Sequence[float], scale: int) -> list[float]:
    """Each latency replaced by its bucket at `scale` (0 ms below every bucket): the same ties the
    histograms have, for scipy to rank."""
    return [float(bucket_index(v, scale)) if v > 0 else -1e9 for v in values]


def raw_hodges_lehmann(wave: Sequence[float], baseline: Sequence[float]) -> float:
    """The exact estimate on raw positive samples: exp of the median of all log differences."""
    differences = np.subtract.outer(np.log(wave), np.log(baseline))
    return math.exp(float(np.median(differences)))


def comparison(*, ratio: float = 1.0, low: float, high: float) -> LatencyComparison:
    return LatencyComparison(
        n_wave=100,
        n_baseline=100,
        u=5000.0,
        z=0.0,
        p_two_sided=1.0,
        p_wave_slower=0.5,
        ratio=ratio,
        ratio_low=low,
        ratio_high=high,
        confidence=0.95,
    )


# --- Mann-Whitney U on binned latencies ---------------------------------------------------------


@settings(max_examples=150, deadline=None, derandomize=True)
@given(wave=SAMPLE, baseline=SAMPLE, wave_scale=SCALE, baseline_scale=SCALE)
def test_u_and_p_values_agree_with_scipy_on_the_same_ties(
    wave: list[float], baseline: list[float], wave_scale: int, baseline_scale: int
) -> None:
    w, b = histogram.of(wave, scale=wave_scale), histogram.of(baseline, scale=baseline_scale)
    common = min(w.scale, b.scale)  # either may have lowered its scale to fit MAX_BUCKETS
    x, y = representatives(wave, common), representatives(baseline, common)
    assume(len(set(x + y)) > 1)  # one tie group: scipy's variance is 0 (nan)

    result = compare_latency(w, b)

    two_sided = mannwhitneyu(x, y, method="asymptotic", use_continuity=False)
    greater = mannwhitneyu(x, y, method="asymptotic", use_continuity=False, alternative="greater")
    assert (result.n_wave, result.n_baseline) == (len(wave), len(baseline))
    assert result.u == pytest.approx(float(two_sided.statistic), rel=1e-12, abs=1e-9)
    assert result.p_two_sided == pytest.approx(float(two_sided.pvalue), rel=1e-9, abs=1e-15)
    assert result.p_wave_slower == pytest.approx(float(greater.pvalue), rel=1e-9, abs=1e-15)


def test_every_latency_in_one_bucket_is_no_evidence_of_a_difference() -> None:
    result = compare_latency(histogram.of([10.0] * 5), histogram.of([10.0] * 7))
    assert (result.u, result.z, result.p_two_sided, result.p_wave_slower) == (17.5, 0.0, 1.0, 0.5)
    assert result.ratio == pytest.approx(1.0)


def test_a_slower_wave_has_a_small_one_sided_p_value_and_a_faster_one_a_large_one() -> None:
    baseline = histogram.of(lognormal(1, 2000))
    slower = compare_latency(histogram.of(lognormal(2, 2000, factor=1.2)), baseline)
    faster = compare_latency(histogram.of(lognormal(3, 2000, factor=1 / 1.2)), baseline)
    assert slower.z > 0 and slower.p_wave_slower < 1e-9 and slower.p_two_sided < 1e-9
    assert faster.z < 0 and faster.p_wave_slower > 1 - 1e-9 and faster.p_two_sided < 1e-9


def test_swapping_the_sides_mirrors_the_judgement() -> None:
    w, b = histogram.of(lognormal(4, 300, factor=1.1)), histogram.of(lognormal(5, 500))
    forward, backward = compare_latency(w, b), compare_latency(b, w)
    assert forward.u + backward.u == pytest.approx(300 * 500)
    assert forward.z == pytest.approx(-backward.z)
    assert forward.ratio == pytest.approx(1 / backward.ratio)
    assert forward.ratio_low == pytest.approx(1 / backward.ratio_high)
    assert forward.ratio_high == pytest.approx(1 / backward.ratio_low)


def test_histograms_at_different_scales_are_compared_at_the_coarser_one() -> None:
    fine, coarse = lognormal(6, 400), lognormal(7, 400)
    mixed = compare_latency(histogram.of(fine, scale=4), histogram.of(coarse, scale=2))
    both_coarse = compare_latency(histogram.of(fine, scale=2), histogram.of(coarse, scale=2))
    assert mixed == both_coarse


def test_the_inputs_are_left_as_they_were() -> None:
    w, b = histogram.of(lognormal(8, 100), scale=4), histogram.of(lognormal(9, 100), scale=2)
    before = (w.scale, w.offset, list(w.counts)), (b.scale, b.offset, list(b.counts))
    compare_latency(w, b)
    assert ((w.scale, w.offset, w.counts), (b.scale, b.offset, b.counts)) == before


# --- Hodges-Lehmann ratio and its interval ------------------------------------------------------


@pytest.mark.parametrize("scale", [0, 2, 3, 4])
@pytest.mark.parametrize("factor", [1.0, 1.2, 1 / 1.3])
def test_the_ratio_is_within_a_bucket_of_the_true_shift_and_its_interval_covers_it(scale: int, factor: float) -> None:
    wave = histogram.of(stratified(10, 4000, factor=factor), scale=scale)
    result = compare_latency(wave, histogram.of(stratified(11, 6000), scale=scale))
    assert abs(math.log(result.ratio / factor)) <= 0.1 * math.log(base(scale))  # a tenth of the bucket width
    assert result.ratio_low <= factor <= result.ratio_high
    assert result.ratio_low < result.ratio < result.ratio_high
    assert result.confidence == 0.95


@pytest.mark.parametrize("scale", [0, 3])
@pytest.mark.parametrize("seed", range(4))
def test_the_ratio_is_interpolated_not_quantised_to_a_bucket(scale: int, seed: int) -> None:
    """Against the exact estimate of the raw samples, the binned one is off by a small fraction of
    a bucket, even when buckets are a factor 2 wide (scale 0) and the shift is not a whole bucket."""
    wave, baseline = lognormal(seed, 500, factor=1.3), lognormal(100 + seed, 500)
    result = compare_latency(histogram.of(wave, scale=scale), histogram.of(baseline, scale=scale))
    off_in_buckets = abs(math.log(result.ratio / raw_hodges_lehmann(wave, baseline))) / math.log(base(scale))
    assert off_in_buckets < 0.15


def test_the_interval_covers_the_true_ratio_about_as_often_as_it_says() -> None:
    trials, factor = 60, 1.2
    covered = 0
    for seed in range(trials):
        result = compare_latency(
            histogram.of(lognormal(seed, 300, factor=factor)), histogram.of(lognormal(1000 + seed, 300))
        )
        covered += result.ratio_low <= factor <= result.ratio_high
    assert covered >= 0.85 * trials  # nominal 95 %: 57 of 60 expected, 51 is 3 standard errors lower


def test_a_wider_confidence_gives_a_wider_interval() -> None:
    w, b = histogram.of(lognormal(12, 500)), histogram.of(lognormal(13, 500))
    narrow, wide = compare_latency(w, b, confidence=0.8), compare_latency(w, b, confidence=0.99)
    assert wide.ratio_low < narrow.ratio_low < narrow.ratio < narrow.ratio_high < wide.ratio_high
    assert wide.ratio == narrow.ratio


def test_too_few_samples_leave_the_ratio_unbounded() -> None:
    """With 3 against 3 no ordering is rare enough for 95 % (the smallest exact p is 0.1)."""
    result = compare_latency(histogram.of([10.0, 11.0, 12.0]), histogram.of([20.0, 21.0, 22.0]))
    assert (result.ratio_low, result.ratio_high) == (0.0, math.inf)
    assert 1 / 2.5 < result.ratio < 1 / 1.5  # the wave is about twice as fast


def test_the_interval_uses_the_standard_rank_k() -> None:
    """The interval's ends are the k-th smallest and largest raw pairwise log-differences, to
    within a bucket (binning moves each difference by less than one)."""
    wave, baseline = lognormal(14, 200, factor=1.1), lognormal(15, 300)
    result = compare_latency(histogram.of(wave, scale=4), histogram.of(baseline, scale=4))
    ratios = np.sort(np.subtract.outer(np.log(wave), np.log(baseline)).ravel())
    nm = 200 * 300
    k = math.floor(nm / 2 - NormalDist().inv_cdf(0.975) * math.sqrt(nm * (200 + 300 + 1) / 12))
    bucket = math.log(base(4))
    assert abs(math.log(result.ratio_low) - ratios[k - 1]) < bucket
    assert abs(math.log(result.ratio_high) - ratios[nm - k]) < bucket


# --- 0 ms latencies -----------------------------------------------------------------------------


def test_zero_latencies_rank_below_every_positive_one() -> None:
    zeros = ExponentialHistogram(zero_count=10)
    positive = histogram.of([0.5, 3.0, 40.0])
    faster = compare_latency(zeros, positive)
    assert faster.u == 0.0 and faster.ratio == 0.0 and faster.p_wave_slower > 0.99
    slower = compare_latency(positive, zeros)
    assert slower.u == 30.0 and slower.ratio == math.inf and slower.p_wave_slower < 0.01


def test_only_zero_latencies_on_both_sides_are_ties() -> None:
    result = compare_latency(ExponentialHistogram(zero_count=4), ExponentialHistogram(zero_count=6))
    assert (result.u, result.z, result.p_two_sided) == (12.0, 0.0, 1.0)
    assert result.ratio == pytest.approx(1.0)


def test_a_few_zero_latencies_on_both_sides_do_not_move_the_ratio() -> None:
    wave = histogram.of(lognormal(16, 3000, factor=1.2) + [0.0] * 150)
    baseline = histogram.of(lognormal(17, 3000) + [0.0] * 150)
    result = compare_latency(wave, baseline)
    assert result.ratio_low <= 1.2 <= result.ratio_high
    assert abs(math.log(result.ratio / 1.2)) < math.log(base(3))


# --- errors ---------------------------------------------------------------------------------------


def test_an_empty_side_is_refused_by_name() -> None:
    some = histogram.of([1.0, 2.0])
    with pytest.raises(ValueError, match="wave histogram is empty"):
        compare_latency(ExponentialHistogram(), some)
    with pytest.raises(ValueError, match="baseline histogram is empty"):
        compare_latency(some, ExponentialHistogram(offset=4, counts=[0, 0]))


@pytest.mark.parametrize("confidence", [0.0, 1.0, -0.5, 95.0, math.nan])
def test_a_confidence_outside_zero_one_is_refused(confidence: float) -> None:
    some = histogram.of([1.0, 2.0])
    with pytest.raises(ValueError, match="confidence"):
        compare_latency(some, some, confidence=confidence)


# --- non-inferiority verdict ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "high", "verdict"),
    [
        (0.95, 1.05, "Successful"),
        (0.95, 1.10, "Successful"),  # at the margin is not worse than it
        (1.00, 1.20, "Inconclusive"),
        (1.10, 1.20, "Inconclusive"),  # could be exactly the margin
        (1.11, 1.20, "Failed"),
        (0.00, math.inf, "Inconclusive"),
    ],
)
def test_the_verdict_reads_the_interval_against_the_margin(low: float, high: float, verdict: str) -> None:
    assert non_inferior(comparison(low=low, high=high), margin_ratio=1.1) == verdict


def test_identical_distributions_with_many_samples_succeed() -> None:
    result = compare_latency(histogram.of(lognormal(20, 5000)), histogram.of(lognormal(21, 5000)))
    assert non_inferior(result, margin_ratio=1.1) == "Successful"


def test_a_thirty_percent_slowdown_fails_a_ten_percent_margin() -> None:
    result = compare_latency(histogram.of(lognormal(22, 2000, factor=1.3)), histogram.of(lognormal(23, 2000)))
    assert non_inferior(result, margin_ratio=1.1) == "Failed"


def test_tiny_samples_decide_nothing() -> None:
    result = compare_latency(histogram.of(lognormal(24, 5)), histogram.of(lognormal(25, 5)))
    assert non_inferior(result, margin_ratio=1.1) == "Inconclusive"
    result = compare_latency(histogram.of(lognormal(26, 5, factor=1.5)), histogram.of(lognormal(27, 5)))
    assert non_inferior(result, margin_ratio=1.1) == "Inconclusive"


@pytest.mark.parametrize("margin", [0.0, -1.0, math.inf, math.nan])
def test_a_margin_must_be_a_finite_positive_ratio(margin: float) -> None:
    with pytest.raises(ValueError, match="margin_ratio"):
        non_inferior(comparison(low=0.9, high=1.1), margin_ratio=margin)


# --- PSI and Jensen-Shannon ---------------------------------------------------------------------


@settings(max_examples=100, deadline=None, derandomize=True)
@given(counts=COUNTS, factor=st.integers(min_value=1, max_value=50))
def test_psi_of_identical_shares_is_zero(counts: list[int], factor: int) -> None:
    assume(sum(counts) > 0)
    assert psi(counts, [c * factor for c in counts]) == pytest.approx(0.0, abs=1e-12)


def test_psi_of_a_small_example_is_the_hand_computed_value() -> None:
    # shares 0.5 / 0.5 against 0.25 / 0.75: (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
    # = 0.25 (ln 2 + ln 1.5) = 0.25 ln 3
    assert psi([50, 50], [25, 75]) == pytest.approx(0.25 * math.log(3), rel=1e-12)
    assert psi([50, 50], [25, 75]) == pytest.approx(0.274653, abs=1e-6)


def test_an_empty_bin_counts_with_the_epsilon_share() -> None:
    # reference shares 1 / 0 -> 1 / 0.0001; current 0.5 / 0.5:
    # (0.5 - 1) ln(0.5) + (0.5 - 0.0001) ln(0.5 / 0.0001) = 0.346574 + 4.257745
    assert psi([10, 0], [5, 5]) == pytest.approx(4.604319, abs=1e-6)
    assert psi([10, 0], [5, 5], epsilon=1e-3) < psi([10, 0], [5, 5])


@settings(max_examples=100, deadline=None, derandomize=True)
@given(data=st.data())
def test_psi_is_non_negative_and_symmetric(data: st.DataObject) -> None:
    reference = data.draw(COUNTS)
    current = data.draw(st.lists(st.integers(0, 1000), min_size=len(reference), max_size=len(reference)))
    assume(sum(reference) > 0 and sum(current) > 0)
    forward = psi(reference, current)
    assert forward >= 0.0
    assert forward == pytest.approx(psi(current, reference), rel=1e-12, abs=1e-15)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(data=st.data())
def test_jensen_shannon_is_scipys_base_2_distance(data: st.DataObject) -> None:
    reference = data.draw(COUNTS)
    current = data.draw(st.lists(st.integers(0, 1000), min_size=len(reference), max_size=len(reference)))
    assume(sum(reference) > 0 and sum(current) > 0)
    distance = jensen_shannon(reference, current)
    assert 0.0 <= distance <= 1.0
    assert distance == pytest.approx(jensen_shannon(current, reference), abs=1e-12)
    assert distance == pytest.approx(float(jensenshannon(reference, current, base=2)), abs=1e-7)


def test_jensen_shannon_is_zero_for_the_same_shares_and_one_for_disjoint_ones() -> None:
    assert jensen_shannon([1, 2, 3], [10, 20, 30]) == pytest.approx(0.0, abs=1e-7)
    assert jensen_shannon([5, 0, 0], [0, 3, 4]) == 1.0


@pytest.mark.parametrize("measure", [psi, jensen_shannon])
@pytest.mark.parametrize(
    ("reference", "current", "message"),
    [
        ([1, 2], [1, 2, 3], "must match"),
        ([0, 0], [1, 2], "reference has no counts"),
        ([1, 2], [0, 0], "current has no counts"),
        ([], [], "no counts"),
        ([1, -1, 3], [1, 1, 1], ">= 0"),
        ([1, math.inf], [1, 1], "finite"),
    ],
)
def test_binned_measures_refuse_what_is_not_two_distributions(
    measure: object, reference: list[float], current: list[float], message: str
) -> None:
    assert callable(measure)
    with pytest.raises(ValueError, match=message):
        measure(reference, current)


# --- latency on fixed bins ------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    values=st.lists(LATENCY, max_size=200),
    scale=SCALE,
    edges=st.lists(st.floats(min_value=0.001, max_value=1e5), min_size=1, max_size=12, unique=True),
)
def test_rebinning_keeps_the_total_count(values: list[float], scale: int, edges: list[float]) -> None:
    hist = histogram.of(values, scale=scale)
    bins = histogram_bins(hist, sorted(edges))
    assert len(bins) == len(edges) + 1
    assert all(b >= -1e-9 for b in bins)
    assert sum(bins) == pytest.approx(len(values), abs=1e-6)


def test_buckets_inside_a_bin_go_wholly_to_it_and_zeros_to_the_first() -> None:
    hist = histogram.of([0.0, 0.0, 1.0, 2.0, 100.0, 5000.0])
    assert histogram_bins(hist, [10.0, 1000.0]) == pytest.approx([4.0, 1.0, 1.0])


def test_a_straddling_bucket_is_split_by_log_width() -> None:
    # Scale 0: bucket 3 is (8, 16]; 8 * 2**0.25 is a quarter of its log-width in.
    hist = ExponentialHistogram(scale=0, offset=3, counts=[100])
    assert histogram_bins(hist, [8 * 2**0.25]) == pytest.approx([25.0, 75.0])


def test_psi_on_rebinned_latency_sees_a_slowdown_and_not_noise() -> None:
    edges = list(np.geomspace(2.0, 200.0, 20))
    reference = histogram_bins(histogram.of(lognormal(30, 3000)), edges)
    same = histogram_bins(histogram.of(lognormal(31, 3000), scale=4), edges)
    slower = histogram_bins(histogram.of(lognormal(32, 3000, factor=1.5)), edges)
    assert psi(reference, same) < PSI_THRESHOLD < psi(reference, slower)


@pytest.mark.parametrize("edges", [[], [0.0, 1.0], [5.0, 5.0], [10.0, 1.0], [1.0, math.inf]])
def test_edges_must_be_positive_and_increasing(edges: list[float]) -> None:
    with pytest.raises(ValueError, match="edges"):
        histogram_bins(histogram.of([1.0]), edges)


# --- moments and the standardised shift -------------------------------------------------------


VALUES = st.lists(st.floats(min_value=-1e6, max_value=1e6), max_size=50)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(first=VALUES, second=VALUES)
def test_merged_moments_are_the_moments_of_the_concatenation(first: list[float], second: list[float]) -> None:
    merged = Moments.of(first).merge(Moments.of(second))
    whole = Moments.of(first + second)
    assert merged.count == whole.count
    scale = max([1.0] + [abs(v) for v in first + second])
    assert merged.mean == pytest.approx(whole.mean, rel=1e-9, abs=1e-9 * scale)
    assert merged.variance == pytest.approx(whole.variance, rel=1e-7, abs=1e-9 * scale * scale)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(parts=st.lists(VALUES, min_size=1, max_size=8))
def test_merging_many_windows_in_any_grouping_agrees(parts: list[list[float]]) -> None:
    left = Moments(0, 0.0, 0.0)
    for part in parts:
        left = left.merge(Moments.of(part))
    right = Moments(0, 0.0, 0.0)
    for part in reversed(parts):
        right = Moments.of(part).merge(right)
    whole = Moments.of([v for part in parts for v in part])
    scale = max([1.0] + [abs(v) for part in parts for v in part])
    for merged in (left, right):
        assert merged.count == whole.count
        assert merged.mean == pytest.approx(whole.mean, rel=1e-9, abs=1e-9 * scale)
        assert merged.variance == pytest.approx(whole.variance, rel=1e-7, abs=1e-9 * scale * scale)


def test_moments_of_values_are_population_moments() -> None:
    assert Moments.of([1.0, 2.0, 3.0, 4.0]) == Moments(4, 2.5, 1.25)
    assert Moments.of([]) == Moments(0, 0.0, 0.0)


@pytest.mark.parametrize(("count", "mean", "variance"), [(-1, 0.0, 0.0), (1, 0.0, -1.0), (1, math.nan, 0.0)])
def test_impossible_moments_are_refused(count: int, mean: float, variance: float) -> None:
    with pytest.raises(ValueError):
        Moments(count, mean, variance)


def test_the_shift_is_in_reference_standard_deviations() -> None:
    reference = Moments(1000, 10.0, 4.0)
    assert standardized_shift(reference, Moments(5, 13.0, 100.0)) == pytest.approx(1.5)
    assert standardized_shift(reference, Moments(5, 7.0, 0.0)) == pytest.approx(1.5)


def test_a_constant_reference_does_not_divide_by_zero() -> None:
    constant = Moments(500, 2.0, 0.0)
    assert standardized_shift(constant, Moments(10, 2.0, 0.0)) == 0.0
    assert standardized_shift(constant, Moments(10, 2.0 * (1 + 1e-7), 0.0)) < 0.01  # float noise
    assert standardized_shift(constant, Moments(10, 2.02, 0.0)) == pytest.approx(10.0)  # 1 % is 10 floored stds
    assert math.isfinite(standardized_shift(Moments(500, 0.0, 0.0), Moments(10, 1.0, 0.0)))


def test_the_shift_needs_both_sides() -> None:
    with pytest.raises(ValueError, match="at least one value"):
        standardized_shift(Moments(0, 0.0, 0.0), Moments(1, 1.0, 0.0))
    with pytest.raises(ValueError, match="at least one value"):
        standardized_shift(Moments(1, 1.0, 0.0), Moments(0, 0.0, 0.0))
