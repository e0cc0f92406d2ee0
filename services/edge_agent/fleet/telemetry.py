"""Telemetry windows for devices that do not run inference themselves, drawn from real measurements.

Nothing is invented: a window's requests are a bootstrap resample of the requests this host ran on
the same artifact (`inference.measure`), their latencies multiplied by the device class's speed
factor (the rule the optimizer's budgets use), their output moments and errors those of the
resampled requests, and their shadow verdicts those measured for the same inputs against the
previous model. The window is then closed by the agent's own `WindowRecorder`, so drawn and real
windows have the same shape and statistics.

What is modelled, not measured, and said so: the request count is Poisson(rate x window length);
`cpu_percent` is the share of the window the device spent computing (sum of its latencies over the
window length: a floor on real CPU use); `ram_mb` is the optimizer's requirement estimate for the
model (64 MiB runtime + twice the file size), since a simulated device has no memory of its own.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Protocol

import numpy as np

from services.edge_agent.fleet.inference import Measurement
from services.edge_agent.telemetry import WindowRecorder
from shared.messages.device import TelemetryWindow

RUNTIME_OVERHEAD_MB = 64.0


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
    speed_factor: float,
    start: datetime,
    end: datetime,
    rate: float,
    rng: np.random.Generator,
    ram_mb: float,
    shadow: tuple[str, np.ndarray] | None = None,
) -> TelemetryWindow:
    """One device's window over [start, end] on the measured artifact.

    Args:
        measurement: the artifact as measured on this host.
        speed_factor: the device class's latency multiplier.
        rate: mean requests per second.
        shadow: (previous digest, per-request agreement aligned with `measurement`), in shadow mode.
    """
    seconds = (end - start).total_seconds()
    recorder = WindowRecorder(digest=measurement.digest, started=start)
    busy_ms = 0.0
    count = int(rng.poisson(rate * seconds)) if seconds > 0 else 0
    if count and measurement.requests:
        picked = rng.integers(0, measurement.requests, size=count)
        latency = measurement.latency_ms[picked] * speed_factor
        buckets = np.searchsorted(np.asarray(recorder.bounds_ms), latency, side="left")
        recorder.counts = [int(c) for c in np.bincount(buckets, minlength=len(recorder.bounds_ms) + 1)]
        recorder.requests = count
        failed = measurement.errors[picked]
        recorder.errors = int(failed.sum())
        served = picked[~failed]
        _add(recorder.norms, measurement.norm_moments[served])
        _add(recorder.values, measurement.value_moments[served])
        if shadow is not None and served.size:
            previous, agreed = shadow
            recorder.shadow_previous = previous
            recorder.shadow_compared = int(served.size)
            recorder.shadow_agreed = int(agreed[served].sum())
        busy_ms = float(latency.sum())
    return recorder.close(device_id=device_id, ended=end, cpu_percent=busy_percent(busy_ms, seconds), ram_mb=ram_mb)


class _MomentsLike(Protocol):
    n: int
    total: float
    total_sq: float


def _add(moments: _MomentsLike, rows: np.ndarray) -> None:
    """Add per-request (n, sum, sum of squares) rows to a recorder's running moments."""
    if rows.size:
        n, total, total_sq = rows.sum(axis=0)
        moments.n += int(n)
        moments.total += float(total)
        moments.total_sq += float(total_sq)
