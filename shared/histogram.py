"""Mergeable latency histograms with a stated relative-error bound: OpenTelemetry's base-2
exponential histogram.

Why this and not fixed buckets: a gate that compares p95 against "+10 %" needs buckets narrower
than 10 % everywhere, at every latency a fleet may have; fixed buckets are 40 % wide where it
matters (10–15 ms). Exponential buckets are a constant *ratio* wide: at scale `s` the boundaries
are `base**i` with `base = 2 ** (2 ** -s)`, so every bucket is `(base**i, base**(i+1)]` and any
value reported from it is within `(base - 1) / (base + 1)` of every value in it — 4.3 % at scale 3,
2.2 % at scale 4 (`relative_error`). Windows from many devices merge by adding counts (after
bringing both to the coarser scale), so a fleet's quantile is as exact as one device's.

The representation is OpenTelemetry's (`scale`, `zero_count`, `offset`, `counts` of the positive
buckets from index `offset`), so an OTel collector can take it as it is. Latencies are positive;
values at or below `zero_threshold` count as zero.

Everything here is a pure function of its inputs; `tests/unit/shared/test_histogram.py` checks the
bound against the exact quantiles of the raw values, for histograms merged from many devices.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

DEFAULT_SCALE = 3  # base 2^(1/8): every reported value within 4.3 % of the true one
MAX_SCALE = 8
MIN_SCALE = -4
MAX_BUCKETS = 160  # OpenTelemetry's default; a wider spread lowers the scale (coarser, still bounded)


def base(scale: int) -> float:
    """The ratio between consecutive bucket boundaries at `scale`."""
    return float(2.0 ** (2.0**-scale))


def relative_error(scale: int) -> float:
    """The largest relative error of a value reported from a bucket at `scale` (its harmonic-mean
    representative against anything in the bucket)."""
    b = base(scale)
    return (b - 1) / (b + 1)


def bucket_index(value: float, scale: int) -> int:
    """The index `i` of the bucket `(base**i, base**(i+1)]` that holds `value` (> 0).

    From `log2`, then corrected against the boundaries themselves (`bucket_lower`), so float
    rounding near a boundary cannot put a value in a bucket that does not contain it.
    """
    index = math.ceil(math.log2(value) * 2.0**scale) - 1
    while value <= bucket_lower(index, scale):
        index -= 1
    while value > bucket_lower(index + 1, scale):
        index += 1
    return index


def bucket_lower(index: int, scale: int) -> float:
    """The lower (exclusive) boundary of bucket `index` at `scale`."""
    return float(2.0 ** (index * 2.0**-scale))


@dataclass
class ExponentialHistogram:
    """Positive values in exponential buckets; `record`, `merge`, `quantile`.

    Attributes:
        scale: the resolution (see the module docstring); lowered automatically to keep at most
            `max_buckets` buckets.
        counts: count per bucket index `offset + i`.
    """

    scale: int = DEFAULT_SCALE
    zero_count: int = 0
    offset: int = 0
    counts: list[int] = field(default_factory=list)
    zero_threshold: float = 0.0
    max_buckets: int = MAX_BUCKETS

    @property
    def count(self) -> int:
        return self.zero_count + sum(self.counts)

    def record(self, value: float, count: int = 1) -> None:
        """Count `value` (`count` times)."""
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"a latency must be a finite value >= 0, got {value!r}")
        if value <= self.zero_threshold:
            self.zero_count += count
            return
        index = bucket_index(value, self.scale)
        while not self._fits(index):
            self._downscale(1)
            index >>= 1
        self._add(index, count)

    def merge(self, other: ExponentialHistogram) -> None:
        """Add `other`'s counts into this one (at the coarser of the two scales)."""
        self.merge_buckets(other.scale, other.zero_count, other.offset, other.counts, other.zero_threshold)

    def merge_buckets(
        self, scale: int, zero_count: int, offset: int, counts: Sequence[int], zero_threshold: float = 0.0
    ) -> None:
        """`merge` of a histogram given by its fields (e.g. a window's, as it came off the wire),
        without building one."""
        if self._merge_aligned(scale, zero_count, offset, counts):
            self.zero_threshold = max(self.zero_threshold, zero_threshold)
            return
        if scale < self.scale:
            self._downscale(self.scale - scale)
        shift = scale - self.scale
        self.zero_count += zero_count
        self.zero_threshold = max(self.zero_threshold, zero_threshold)
        for i, n in enumerate(counts):
            if n:
                index = (offset + i) >> shift
                while not self._fits(index):
                    self._downscale(1)
                    shift += 1
                    index = (offset + i) >> shift
                self._add(index, n)

    def _merge_aligned(self, scale: int, zero_count: int, offset: int, counts: Sequence[int]) -> bool:
        """The common case, without per-bucket checks: the same scale, and both ranges fit together
        (windows of one fleet merging into a cohort's bucket). False if it does not apply. An empty
        histogram takes the other's scale: the histogram of the union is the other one."""
        if not self.counts and counts:
            self.scale = scale
        if scale != self.scale:
            return False
        if not counts or not self.counts:
            if not self.counts:
                self.offset, self.counts = offset, list(counts)
            self.zero_count += zero_count
            return True
        low = min(self.offset, offset)
        high = max(self.offset + len(self.counts), offset + len(counts))
        if high - low > self.max_buckets:
            return False
        if low < self.offset:
            self.counts[:0] = [0] * (self.offset - low)
            self.offset = low
        self.counts.extend([0] * (high - self.offset - len(self.counts)))
        start = offset - self.offset
        end = start + len(counts)
        self.counts[start:end] = [a + b for a, b in zip(self.counts[start:end], counts, strict=True)]
        self.zero_count += zero_count
        return True

    def quantile(self, q: float) -> float:
        """The value at rank `ceil(q * count)` (q in [0, 1]), reported as its bucket's harmonic
        midpoint: within `relative_error(scale)` of the exact value at that rank.

        Raises:
            ValueError: an empty histogram, or q outside [0, 1].
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q}")
        total = self.count
        if total == 0:
            raise ValueError("no values recorded")
        rank = max(1, math.ceil(q * total))
        if rank <= self.zero_count:
            return 0.0
        seen = self.zero_count
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                lower = bucket_lower(self.offset + i, self.scale)
                upper = bucket_lower(self.offset + i + 1, self.scale)
                return 2 * lower * upper / (lower + upper)
        raise AssertionError("ranks are bounded by the count")  # pragma: no cover

    def _fits(self, index: int) -> bool:
        if not self.counts:
            return True
        low, high = min(self.offset, index), max(self.offset + len(self.counts) - 1, index)
        return high - low + 1 <= self.max_buckets or self.scale <= MIN_SCALE

    def _add(self, index: int, count: int) -> None:
        if not self.counts:
            self.offset, self.counts = index, [count]
            return
        if index < self.offset:
            self.counts[:0] = [0] * (self.offset - index)
            self.offset = index
        end = self.offset + len(self.counts)
        if index >= end:
            self.counts.extend([0] * (index - end + 1))
        self.counts[index - self.offset] += count

    def _downscale(self, by: int) -> None:
        """Halve the resolution `by` times: bucket `i` becomes `i >> by` (boundaries stay boundaries)."""
        if by <= 0:
            return
        merged: dict[int, int] = {}
        for i, n in enumerate(self.counts):
            if n:
                key = (self.offset + i) >> by
                merged[key] = merged.get(key, 0) + n
        self.scale -= by
        self.offset, self.counts = 0, []
        for index in sorted(merged):
            self._add(index, merged[index])


def of(values: Iterable[float], *, scale: int = DEFAULT_SCALE) -> ExponentialHistogram:
    """A histogram of `values`."""
    histogram = ExponentialHistogram(scale=scale)
    for value in values:
        histogram.record(value)
    return histogram
