"""A window as the aggregates read it, whichever schema the device sent.

Schema 2 (`TelemetryWindow`) maps field for field. Schema 1 (`TelemetryWindowV1`) is still
accepted, read as well as it can be and no better:

  * latency: each fixed bucket's count is put at the bucket's geometric middle (the first bucket,
    `(0, b0]`, at `b0 / 2`; the overflow bucket at 1.5 times the last bound), so its quantiles are
    only as good as its buckets (40 % wide at 10-15 ms): no error bound is claimed for them;
  * device class: schema 1 does not name one: `unknown`; rollout and wave: none;
  * output statistics: each named value becomes the mean of `served` values with no variance (a
    mean of means, which is exactly what schema 2 exists to avoid).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from services.telemetry.statistics import Moments
from shared.histogram import ExponentialHistogram
from shared.messages.device import ExponentialLatency, OutputMoments, TelemetryWindow, TelemetryWindowV1

UNKNOWN_CLASS = "unknown"
# A cohort as a key: digest, device class, rollout, wave (a plain tuple: built once per window).
CohortKey = tuple[str, str, str | None, int | None]


@dataclass(slots=True, kw_only=True)
class Observation:
    """One window, normalised (built once per window, never changed: a plain slotted class, since
    a frozen dataclass's init costs a microsecond more, at fleet rate)."""

    device_id: str
    cohort: CohortKey
    start: datetime
    requests: int
    errors: int
    latency: ExponentialLatency  # as it came: merged straight from its fields, never copied
    outputs: Mapping[str, Moments | OutputMoments]  # both have count, mean and variance
    similarity: tuple[int, ...] | None
    shadow_compared: int
    shadow_agreed: float
    cpu_percent: float
    ram_mb: float


def observe(window: TelemetryWindow | TelemetryWindowV1) -> Observation:
    """The window as the aggregates read it (see the module docstring for schema 1)."""
    if isinstance(window, TelemetryWindowV1):
        return _from_v1(window)
    shadow = window.shadow
    return Observation(
        device_id=window.device_id,
        cohort=(window.model_digest, window.device_class, window.rollout_id, window.wave),
        start=window.window_start,
        requests=window.request_count,
        errors=window.error_count,
        latency=window.latency,
        outputs=window.outputs,
        similarity=tuple(window.similarity.counts) if window.similarity else None,
        shadow_compared=shadow.compared if shadow else 0,
        shadow_agreed=shadow.compared * shadow.agreement_rate if shadow else 0.0,
        cpu_percent=window.cpu_percent,
        ram_mb=window.ram_mb,
    )


def _from_v1(window: TelemetryWindowV1) -> Observation:
    latency = ExponentialHistogram()
    bounds = window.latency.bounds_ms
    for i, count in enumerate(window.latency.counts):
        if count:
            latency.record(_middle(bounds, i), count)
    served = window.request_count - window.error_count
    shadow = window.shadow
    return Observation(
        device_id=window.device_id,
        cohort=(window.model_digest, UNKNOWN_CLASS, None, None),
        start=window.window_start,
        requests=window.request_count,
        errors=window.error_count,
        latency=ExponentialLatency.of(latency),
        outputs={name: Moments(count=served, mean=value, variance=0.0) for name, value in window.output_stats.items()}
        if served
        else {},
        similarity=None,
        shadow_compared=shadow.compared if shadow else 0,
        shadow_agreed=shadow.compared * shadow.agreement_rate if shadow else 0.0,
        cpu_percent=window.cpu_percent,
        ram_mb=window.ram_mb,
    )


def _middle(bounds: list[float], i: int) -> float:
    """A representative latency for fixed bucket `i` (see the module docstring)."""
    if i == 0:
        return bounds[0] / 2
    if i >= len(bounds):
        return bounds[-1] * 1.5
    return math.sqrt(bounds[i - 1] * bounds[i])
