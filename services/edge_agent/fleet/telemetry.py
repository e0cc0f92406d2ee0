"""Telemetry windows for devices that do not run inference themselves, drawn from real measurements.

Nothing is invented: a window's requests are a bootstrap resample of the requests this host ran on
the same artifact (`inference.measure`, or `inference.measure_shifted` for a device whose inputs
have shifted), their latencies multiplied by the device class's speed factor (the rule the
optimizer's budgets use), their output moments, similarities and errors those of the resampled
requests, and their shadow verdicts those measured for the same inputs against the previous model.
The window is then closed by the agent's own `WindowRecorder`, so drawn and real windows have the
same shape and statistics; the latency histogram is filled in a few numpy passes
(`exponential_histogram`), with exactly the buckets `ExponentialHistogram.record` would give.

The device's reference rule holds too: its first `REFERENCE_REQUESTS` served requests on a digest
build its reference centroid and are not counted (the caller says how many it has served,
`reference_served`); the similarities are the measured ones, against the measurement's centroid
(the host's stand-in for the device's, built the same way from the same kind of inputs).

What is modelled, not measured, and said so: the request count is Poisson(rate x window length);
`cpu_percent` is the share of the window the device spent computing (sum of its latencies over the
window length: a floor on real CPU use); `ram_mb` is the optimizer's requirement estimate for the
model (64 MiB runtime + twice the file size), since a simulated device has no memory of its own.
"""

from __future__ import annotations

import math
from datetime import datetime
from functools import lru_cache

import numpy as np

from services.edge_agent.fleet.inference import Measurement
from services.edge_agent.telemetry import LATENCY_SCALE, REFERENCE_REQUESTS, WindowRecorder
from shared.histogram import MIN_SCALE, ExponentialHistogram, bucket_index, bucket_lower
from shared.messages.device import SIMILARITY_BOUNDS, TelemetryWindow
from shared.output_statistics import Moments

RUNTIME_OVERHEAD_MB = 64.0
_BOUNDS = np.asarray(SIMILARITY_BOUNDS)
_TABLE_STEP = 64  # boundary tables cover index ranges rounded out to this, so a few tables serve every window


def model_ram_mb(size_bytes: int) -> float:
    """Resident memory of an agent serving a model of `size_bytes` (the optimizer's estimate)."""
    return RUNTIME_OVERHEAD_MB + 2 * size_bytes / 1024**2


def busy_percent(latency_ms: float, seconds: float) -> float:
    """Share of a window spent computing, 0-100."""
    if seconds <= 0 or not math.isfinite(latency_ms):
        return 0.0
    return min(100.0, 100.0 * latency_ms / 1000.0 / seconds)


def draw_window(
    measurement: Measurement,
    *,
    device_id: str,
    device_class: str,
    speed_factor: float,
    start: datetime,
    end: datetime,
    rate: float,
    rng: np.random.Generator,
    ram_mb: float,
    reference_served: int,
    rollout_id: str | None = None,
    wave: int | None = None,
    shadow: tuple[str, np.ndarray] | None = None,
) -> TelemetryWindow:
    """One device's window over [start, end] on the measured artifact.

    Args:
        measurement: the artifact as measured on this host (on shifted inputs, for a shifted device).
        device_class: the class the device announces.
        speed_factor: the device class's latency multiplier.
        rate: mean requests per second.
        reference_served: requests the device has served on this digest before the window (its
            reference is complete from `REFERENCE_REQUESTS` on).
        rollout_id: the rollout of the device's desired state (None: by hand), with its `wave`.
        shadow: (previous digest, per-request agreement aligned with `measurement`), in shadow mode.
    """
    seconds = (end - start).total_seconds()
    recorder = WindowRecorder(digest=measurement.digest, started=start, rollout_id=rollout_id, wave=wave)
    busy_ms = 0.0
    count = int(rng.poisson(rate * seconds)) if seconds > 0 else 0
    if count and measurement.requests:
        picked = rng.integers(0, measurement.requests, size=count)
        latency = measurement.latency_ms[picked] * speed_factor
        recorder.latency = exponential_histogram(latency, scale=LATENCY_SCALE)
        recorder.requests = count
        failed = measurement.errors[picked]
        recorder.errors = int(np.count_nonzero(failed))
        served = picked[~failed] if recorder.errors else picked
        recorder.norms = Moments.of_groups(measurement.norm_moments[served])
        recorder.values = Moments.of_groups(measurement.value_moments[served])
        similarity = measurement.similarity[served]
        building = max(0, REFERENCE_REQUESTS - reference_served)
        if building or np.isnan(similarity).any():
            similarity = similarity[~np.isnan(similarity)][building:]
        if similarity.size:
            bins = np.searchsorted(_BOUNDS, similarity, side="left")
            recorder.similarity = np.bincount(bins, minlength=len(SIMILARITY_BOUNDS) + 1).tolist()
        if shadow is not None and served.size:
            previous, agreed = shadow
            recorder.shadow_previous = previous
            recorder.shadow_compared = int(served.size)
            recorder.shadow_agreed = int(agreed[served].sum())
        busy_ms = float(latency.sum())
    return recorder.close(
        device_id=device_id,
        device_class=device_class,
        ended=end,
        cpu_percent=busy_percent(busy_ms, seconds),
        ram_mb=ram_mb,
    )


def exponential_histogram(values: np.ndarray, *, scale: int) -> ExponentialHistogram:
    """The histogram `ExponentialHistogram.record` builds from `values`, one by one, at `scale`.

    Vectorised: bucket indexes from `log2`, corrected against the histogram's own boundaries (the
    same floats `bucket_index` compares with, so float rounding gives the same bucket; tested
    against `record`, value by value), then the
    largest scale at or under `scale` whose buckets fit `max_buckets` — which is where recording
    one by one ends, since each value downscales only as far as it must — and one `bincount`.

    Raises:
        ValueError: a value is negative or not finite (as `record` does).
    """
    histogram = ExponentialHistogram(scale=scale)
    values = np.asarray(values, dtype=np.float64)
    if not values.size:
        return histogram
    smallest, largest = float(values.min()), float(values.max())  # NaN propagates into both
    if not (math.isfinite(largest) and smallest >= 0):
        raise ValueError(f"latencies must be finite values >= 0, got values from {smallest} to {largest}")
    positive = values[values > histogram.zero_threshold] if smallest <= histogram.zero_threshold else values
    histogram.zero_count = int(values.size - positive.size)
    if not positive.size:
        return histogram
    low = bucket_index(float(positive.min()) if positive is not values else smallest, scale)
    high = bucket_index(largest, scale)
    first, table = _boundaries(scale, low - 1, high + 1)
    # log2 is off by far less than a bucket, so the estimate is the bucket or a neighbour: kept within
    # the exact indexes of the smallest and largest value, then corrected once each way.
    index = np.ceil(np.log2(positive) * 2.0**scale).astype(np.int64) - 1
    np.maximum(index, low, out=index)
    np.minimum(index, high, out=index)
    index -= positive <= table[index - first]
    index += positive > table[index + 1 - first]
    while (high >> (scale - histogram.scale)) - (low >> (scale - histogram.scale)) + 1 > histogram.max_buckets:
        if histogram.scale <= MIN_SCALE:
            break
        histogram.scale -= 1
    shift = scale - histogram.scale
    histogram.offset = low >> shift
    histogram.counts = np.bincount((index >> shift) - histogram.offset).tolist()
    return histogram


def _boundaries(scale: int, low: int, high: int) -> tuple[int, np.ndarray]:
    """(first index, lower boundaries of buckets first..) covering `low..high` at `scale`."""
    first = (low // _TABLE_STEP) * _TABLE_STEP
    last = -(-(high + 1) // _TABLE_STEP) * _TABLE_STEP
    return first, _table(scale, first, last)


@lru_cache(maxsize=64)
def _table(scale: int, first: int, last: int) -> np.ndarray:
    table = np.array([bucket_lower(i, scale) for i in range(first, last + 1)])
    table.setflags(write=False)
    return table
