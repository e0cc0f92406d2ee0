"""The numbers rollout gates and drift are judged on, as pure functions of aggregated telemetry.

Latency gates compare a wave (devices on the new model) with its baseline (devices still on the
old one) the way Kayenta judges a canary: a Mann-Whitney U test for "is the wave slower", and the
Hodges-Lehmann estimate of how much slower, as a latency *ratio* with a confidence interval
(`compare_latency`). `non_inferior` turns that interval into a verdict against a margin. Both work
on OpenTelemetry exponential histograms (`shared.histogram`), never on raw latencies: a bucket is
a group of ties, and because bucket boundaries are equally spaced in log-latency, a shift of
log-latency (a constant slowdown factor) is a shift of bucket indexes.

Drift compares a current window with a reference on fixed bins (`psi`, `jensen_shannon`, with
`histogram_bins` to put a latency histogram on fixed edges) or on moments (`standardized_shift`
over `Moments`, which merge exactly across devices and windows).

Nothing here does I/O or keeps state; scipy is only the tests' oracle, not a dependency.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Literal

import numpy as np
import numpy.typing as npt

from shared.histogram import ExponentialHistogram

DEFAULT_CONFIDENCE = 0.95
# Evidently's default drift threshold for PSI: "no significant change" below 0.1, the common
# 0.1 / 0.25 rule of thumb's first step.
PSI_THRESHOLD = 0.1
# Evidently replaces the share of an empty bin by 0.0001 so ln(current / reference) stays finite.
PSI_EPSILON = 1e-4
# A reference that never varies (a constant output) would make every change an infinite shift; its
# std is taken as at least 0.1 % of its mean's magnitude (float noise in a model's outputs is ~1e-7
# relative, so it stays far below one std, while a 1 % change reads as 10) and at least 1e-9 when
# the mean is 0.
STD_FLOOR_RELATIVE = 1e-3
STD_FLOOR_ABSOLUTE = 1e-9

Verdict = Literal["Successful", "Failed", "Inconclusive"]

_FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class LatencyComparison:
    """A wave's latency against its baseline's.

    Attributes:
        n_wave: latencies in the wave's histogram.
        n_baseline: latencies in the baseline's histogram.
        u: the Mann-Whitney U of the wave (pairs where the wave is slower, plus half the ties):
            `n_wave * n_baseline / 2` when neither is slower.
        z: U standardised with the tie-corrected normal approximation (0 when every latency is in
            one bucket: nothing to compare).
        p_two_sided: p-value for "the distributions differ".
        p_wave_slower: one-sided p-value for "the wave is slower than the baseline".
        ratio: the Hodges-Lehmann estimate of wave latency / baseline latency (1.0: no change),
            0.0 or inf when most pairs pit a 0 ms latency against a positive one.
        ratio_low: lower end of the `confidence` interval of the ratio (0.0 when unbounded).
        ratio_high: upper end of that interval (inf when unbounded: too few samples).
        confidence: the interval's confidence, e.g. 0.95.
    """

    n_wave: int
    n_baseline: int
    u: float
    z: float
    p_two_sided: float
    p_wave_slower: float
    ratio: float
    ratio_low: float
    ratio_high: float
    confidence: float


def compare_latency(
    wave: ExponentialHistogram, baseline: ExponentialHistogram, *, confidence: float = DEFAULT_CONFIDENCE
) -> LatencyComparison:
    """Judge whether, and by how much, the wave is slower than its baseline.

    Why rank statistics: latency is skewed and heavy-tailed, so a t-test on means is driven by a
    few outliers; Mann-Whitney and Hodges-Lehmann use only the order of values, which binning
    keeps (a bucket is a group of ties). Why a ratio: a model that is 20 % slower is slower by a
    *factor* at every latency; the estimate is a shift of log-latency, which is a shift of bucket
    indexes because bucket boundaries are `base**i`.

    Both histograms are first brought to the coarser of their scales. U uses mid-ranks, one tie
    group per bucket and one for the 0 ms bucket (below every positive one), and its normal
    approximation corrects the variance for those ties. The Hodges-Lehmann shift is the median of
    all pairwise differences of log-latency (wave - baseline): the counts of every bucket
    difference come from convolving the two count vectors (O(B²)), and each difference bucket's
    pairs are spread uniformly over its width, so the median is interpolated instead of rounded to
    a bucket. A pair with a 0 ms latency on one side only differs by -inf or +inf (it stays in the
    ranks); two 0 ms latencies tie. The interval is the standard one from the distribution of U
    (the k-th smallest and k-th largest pairwise difference, `k = nm/2 - z·sqrt(nm(n+m+1)/12)`,
    not rounded since interpolated ranks are continuous, and without the tie correction, so it
    errs on the wide side); when k < 1 the data cannot bound the ratio at this confidence and
    the interval is (0, inf).

    Args:
        wave: latencies of the devices on the new model.
        baseline: latencies of the devices still on the old one.
        confidence: of the ratio's interval, in (0, 1).

    Returns:
        U, z, both p-values, the ratio and its interval.

    Raises:
        ValueError: an empty histogram, a negative count, or a confidence outside (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    scale = min(wave.scale, baseline.scale)
    w = _Binned.of(wave, scale, side="wave")
    b = _Binned.of(baseline, scale, side="baseline")
    n, m = w.total, b.total
    nm = n * m

    u, z = _mann_whitney(w, b)
    p_two_sided = min(1.0, math.erfc(abs(z) / math.sqrt(2.0)))
    p_wave_slower = 0.5 * math.erfc(z / math.sqrt(2.0))

    differences = _Differences.of(w, b)
    ratio = _ratio(differences.at(nm / 2.0), scale)
    z_half = NormalDist().inv_cdf((1.0 + confidence) / 2.0)
    k = nm / 2.0 - z_half * math.sqrt(nm * (n + m + 1) / 12.0)
    if k < 1.0:
        ratio_low, ratio_high = 0.0, math.inf
    else:
        # The k-th smallest difference is the k-th unit of mass; its midpoint sits at k - 0.5.
        ratio_low = _ratio(differences.at(k - 0.5), scale)
        ratio_high = _ratio(differences.at(nm - k + 0.5), scale)
    return LatencyComparison(
        n_wave=int(n),
        n_baseline=int(m),
        u=u,
        z=z,
        p_two_sided=p_two_sided,
        p_wave_slower=p_wave_slower,
        ratio=ratio,
        ratio_low=ratio_low,
        ratio_high=ratio_high,
        confidence=confidence,
    )


def non_inferior(comparison: LatencyComparison, *, margin_ratio: float) -> Verdict:
    """The gate "not worse than the devices still on the old model, at 95 % confidence".

    Non-inferiority, not "no difference": a wave passes when its latency is confidently no more
    than `margin_ratio` times the baseline's, and fails only when it is confidently more, so a
    fleet-sized sample that detects a harmless 1 % slowdown does not fail a gate with a 10 %
    margin, and a tiny sample decides nothing.

    Args:
        comparison: from `compare_latency`; its confidence is the gate's.
        margin_ratio: the largest acceptable wave/baseline latency ratio, e.g. 1.1 for "at most
            10 % slower".

    Returns:
        "Successful" when the whole interval is at or under the margin (`ratio_high <= margin`),
        "Failed" when the whole interval is over it (`ratio_low > margin`), otherwise
        "Inconclusive": not enough evidence yet either way (wait for more windows).

    Raises:
        ValueError: a margin that is not a finite positive ratio.
    """
    if not (math.isfinite(margin_ratio) and margin_ratio > 0.0):
        raise ValueError(f"margin_ratio must be a finite ratio > 0, got {margin_ratio}")
    if comparison.ratio_high <= margin_ratio:
        return "Successful"
    if comparison.ratio_low > margin_ratio:
        return "Failed"
    return "Inconclusive"


def psi(reference: Sequence[int | float], current: Sequence[int | float], *, epsilon: float = PSI_EPSILON) -> float:
    """The Population Stability Index of `current` against `reference`, counted on the same bins.

    `sum((c - r) * ln(c / r))` over the bins' shares. An empty bin's share is replaced by
    `epsilon`, as Evidently does, so a bin that appears or empties adds a large but finite term.
    0 means identical shares; `PSI_THRESHOLD` (0.1) is where drift starts.

    Raises:
        ValueError: different numbers of bins, a negative or non-finite count, an empty side, or
            an epsilon that is not positive.
    """
    if not epsilon > 0.0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    r, c = _shares_of_both(reference, current)
    r = np.where(r == 0.0, epsilon, r)
    c = np.where(c == 0.0, epsilon, c)
    return float(np.sum((c - r) * np.log(c / r)))


def jensen_shannon(reference: Sequence[int | float], current: Sequence[int | float]) -> float:
    """The Jensen-Shannon *distance* (base 2) between the shares of two binned distributions.

    The square root of the JS divergence with log base 2: symmetric, a metric, 0 for identical
    shares and 1 for disjoint ones, and finite with empty bins (no epsilon needed, unlike PSI).
    It equals `scipy.spatial.distance.jensenshannon(p, q, base=2)`; Evidently uses the natural log
    (range [0, 0.833]), so its thresholds are this value times sqrt(ln 2) ≈ 0.833.

    Raises:
        ValueError: different numbers of bins, a negative or non-finite count, or an empty side.
    """
    p, q = _shares_of_both(reference, current)
    mix = (p + q) / 2.0
    divergence = (_kl_base2(p, mix) + _kl_base2(q, mix)) / 2.0
    return min(1.0, math.sqrt(max(0.0, divergence)))


def histogram_bins(hist: ExponentialHistogram, edges: Sequence[float]) -> list[float]:
    """The histogram's counts on fixed bins, so PSI can compare latency windows of any scale.

    `edges` are the k interior boundaries (ms) of k + 1 bins: `[0, e0], (e0, e1], ..., (e_k-1, inf)`,
    so every latency lands somewhere and the total is kept. A bucket that straddles an edge is
    split in proportion to the share of its log-width on each side (its latencies are assumed
    spread evenly in log-latency, the way bucket boundaries are), so the result is fractional.

    Raises:
        ValueError: edges that are not finite, positive and strictly increasing.
    """
    bounds = np.asarray(edges, dtype=np.float64)
    if bounds.ndim != 1 or bounds.size == 0:
        raise ValueError("edges must be a non-empty sequence of latencies")
    if not (np.all(np.isfinite(bounds)) and bounds[0] > 0.0 and np.all(np.diff(bounds) > 0.0)):
        raise ValueError(f"edges must be finite, positive and strictly increasing, got {list(edges)}")
    counts = np.asarray(hist.counts, dtype=np.float64)
    total = float(hist.zero_count) + float(counts.sum())
    if counts.size:
        indexes = hist.offset + np.arange(counts.size, dtype=np.float64)
        # An edge's position in bucket-index units; bucket i spans [i, i + 1) of them.
        positions = np.log2(bounds) * 2.0**hist.scale
        below_share = np.clip(positions[:, None] - indexes[None, :], 0.0, 1.0)
        below = float(hist.zero_count) + below_share @ counts
    else:
        below = np.full(bounds.size, float(hist.zero_count))
    cumulative = np.concatenate(([0.0], below, [total]))
    return [float(x) for x in np.diff(cumulative)]


@dataclass(frozen=True)
class Moments:
    """Count, mean and population variance of a statistic: what device windows carry
    (`OutputMoments`), and what merges exactly across devices and windows.

    `Moments(0, 0.0, 0.0)` is the empty set, the identity of `merge`.
    """

    count: int
    mean: float
    variance: float

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")
        if not (math.isfinite(self.mean) and math.isfinite(self.variance)) or self.variance < 0.0:
            raise ValueError(f"mean and variance must be finite and variance >= 0, got {self.mean}, {self.variance}")

    @classmethod
    def of(cls, values: Iterable[float]) -> Moments:
        """The moments of `values`, in two passes (so the variance has no catastrophic cancellation)."""
        data = [float(v) for v in values]
        if not data:
            return cls(0, 0.0, 0.0)
        mean = math.fsum(data) / len(data)
        variance = math.fsum((v - mean) ** 2 for v in data) / len(data)
        return cls(len(data), mean, variance)

    def merge(self, other: Moments) -> Moments:
        """The moments of both sets together, exactly (Chan, Golub and LeVeque's parallel formula:
        the sums of squared deviations add, plus the spread between the two means)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        squares = (
            self.variance * self.count
            + other.variance * other.count
            + delta * delta * (self.count * other.count / count)
        )
        return Moments(count, mean, squares / count)


def standardized_shift(reference: Moments, current: Moments) -> float:
    """How far the current mean moved, in reference standard deviations: `|mean_c - mean_r| / std_r`.

    An effect size, not a z-test: a z-test divides by `std / sqrt(n)`, and with a fleet's millions
    of values every harmless wobble is "significant"; the question for drift is whether the
    outputs moved by a meaningful share of their normal spread. The reference std is floored at
    `STD_FLOOR_RELATIVE` of the reference mean's magnitude (and `STD_FLOOR_ABSOLUTE`), so a
    constant reference gives a large finite shift for a real change and ~0 for float noise,
    instead of dividing by zero.

    Raises:
        ValueError: either side is empty.
    """
    if reference.count == 0 or current.count == 0:
        raise ValueError("both the reference and the current moments need at least one value")
    std = max(math.sqrt(reference.variance), STD_FLOOR_RELATIVE * abs(reference.mean), STD_FLOOR_ABSOLUTE)
    return abs(current.mean - reference.mean) / std


@dataclass(frozen=True)
class _Binned:
    """One side of a comparison at the common scale: 0 ms count, and positive counts from `low`."""

    zero: float
    low: int
    positive: _FloatArray
    positive_total: float

    @property
    def total(self) -> float:
        return self.zero + self.positive_total

    @property
    def high(self) -> int:
        return self.low + self.positive.size - 1

    @classmethod
    def of(cls, hist: ExponentialHistogram, scale: int, *, side: str) -> _Binned:
        counts = np.asarray(hist.counts, dtype=np.float64)
        if hist.zero_count < 0 or (counts.size and bool(np.any(counts < 0))):
            raise ValueError(f"the {side} histogram has a negative count")
        nonzero = np.flatnonzero(counts)
        if nonzero.size == 0:
            positive, low = np.zeros(0, dtype=np.float64), 0
        else:
            # Downscaling maps bucket i to i >> shift (floor, also for negative indexes).
            indexes = (hist.offset + nonzero) >> (hist.scale - scale)
            low = int(indexes[0])
            positive = np.bincount(indexes - low, weights=counts[nonzero]).astype(np.float64)
        binned = cls(float(hist.zero_count), low, positive, float(positive.sum()))
        if binned.total <= 0:
            raise ValueError(f"the {side} histogram is empty: there is nothing to compare")
        return binned


def _mann_whitney(w: _Binned, b: _Binned) -> tuple[float, float]:
    """U of the wave and its tie-corrected z, over the tie groups [0 ms, bucket low..high]."""
    sides = [s for s in (w, b) if s.positive.size]
    low = min((s.low for s in sides), default=0)
    high = max((s.high for s in sides), default=-1)

    def groups(s: _Binned) -> _FloatArray:
        row = np.zeros(high - low + 2, dtype=np.float64)
        row[0] = s.zero
        if s.positive.size:
            row[1 + s.low - low : 2 + s.high - low] = s.positive
        return row

    a, c = groups(w), groups(b)
    n, m = w.total, b.total
    # A wave latency beats every baseline latency in lower groups and ties half of its own group.
    u = float(np.dot(a, np.cumsum(c) - 0.5 * c))
    ties = a + c
    total = n + m
    # Equals 3pq/(N-1) >= 3 for two groups, so anything under 0.5 is float noise of a single group.
    spread = (total + 1.0) - float(np.sum(ties**3 - ties)) / (total * (total - 1.0))
    if spread < 0.5:
        return u, 0.0
    sigma = math.sqrt(n * m / 12.0 * spread)
    return u, (u - n * m / 2.0) / sigma


@dataclass(frozen=True)
class _Differences:
    """The distribution of all pairwise differences wave - baseline of bucket indexes.

    `minus_inf` pairs a 0 ms wave latency with a positive baseline one, `plus_inf` the reverse;
    `finite[j]` counts pairs whose difference is `low + j`, spread uniformly over
    `[low + j - 0.5, low + j + 0.5)`.
    """

    minus_inf: float
    low: int
    finite: _FloatArray
    plus_inf: float
    cumulative: _FloatArray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cumulative", np.cumsum(self.finite))

    @classmethod
    def of(cls, w: _Binned, b: _Binned) -> _Differences:
        if w.positive.size and b.positive.size:
            finite = np.convolve(w.positive, b.positive[::-1])
            low = w.low - b.high
        else:
            finite, low = np.zeros(0, dtype=np.float64), 0
        both_zero = w.zero * b.zero
        if both_zero > 0:  # two 0 ms latencies tie: difference 0
            if finite.size == 0:
                finite, low = np.array([both_zero]), 0
            else:
                start, end = min(low, 0), max(low + finite.size - 1, 0)
                padded = np.zeros(end - start + 1, dtype=np.float64)
                padded[low - start : low - start + finite.size] = finite
                padded[-start] += both_zero
                finite, low = padded, start
        return cls(
            minus_inf=w.zero * b.positive_total,
            low=low,
            finite=finite,
            plus_inf=w.positive_total * b.zero,
        )

    def at(self, position: float) -> float:
        """The difference below which `position` pairs lie (interpolated inside its bucket)."""
        if position < self.minus_inf:
            return -math.inf
        rest = position - self.minus_inf
        cumulative = self.cumulative
        if cumulative.size == 0 or rest > cumulative[-1]:
            return math.inf
        if rest <= 0.0:
            return self.low - 0.5
        j = int(np.searchsorted(cumulative, rest, side="left"))
        before = float(cumulative[j - 1]) if j else 0.0
        share = (rest - before) / (float(cumulative[j]) - before)
        return self.low + j - 0.5 + share


def _ratio(index_shift: float, scale: int) -> float:
    """A shift of bucket indexes at `scale` as a latency ratio: each index is a factor `base`."""
    log2_ratio = index_shift * 2.0**-scale
    if log2_ratio >= 1024.0:
        return math.inf
    return float(2.0**log2_ratio)


def _shares_of_both(
    reference: Sequence[int | float], current: Sequence[int | float]
) -> tuple[_FloatArray, _FloatArray]:
    if len(reference) != len(current):
        raise ValueError(f"reference has {len(reference)} bins and current {len(current)}: they must match")
    return _shares(reference, "reference"), _shares(current, "current")


def _shares(counts: Sequence[int | float], side: str) -> _FloatArray:
    values = np.asarray(counts, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"{side} must be a flat sequence of counts")
    if not np.all(np.isfinite(values)) or bool(np.any(values < 0)):
        raise ValueError(f"{side} counts must be finite and >= 0")
    total = float(values.sum())
    if total <= 0:
        raise ValueError(f"{side} has no counts")
    return values / total


def _kl_base2(p: _FloatArray, q: _FloatArray) -> float:
    """KL(p || q) in bits over p's support (q > 0 there, as q is a mixture containing p)."""
    support = p > 0
    return float(np.sum(p[support] * np.log2(p[support] / q[support])))
