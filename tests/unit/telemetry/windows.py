"""Telemetry windows for the telemetry service's tests: schema 2, from raw latencies."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from shared.histogram import ExponentialHistogram
from shared.messages.device import ExponentialLatency, OutputMoments, SimilarityHistogram, TelemetryWindow

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OLD = "a" * 64
NEW = "b" * 64


def window(
    device_id: str,
    latencies: Sequence[float],
    *,
    digest: str = NEW,
    device_class: str = "rpi5",
    rollout_id: str | None = "r1",
    wave: int | None = 0,
    start: datetime = T0,
    errors: int = 0,
    norm: tuple[float, float] = (1.0, 0.01),
    similarity: Sequence[int] | None = None,
) -> TelemetryWindow:
    histogram = ExponentialHistogram(scale=4)
    for value in latencies:
        histogram.record(value)
    served = len(latencies) - errors
    return TelemetryWindow(
        device_id=device_id,
        device_class=device_class,
        model_digest=digest,
        rollout_id=rollout_id,
        wave=wave,
        window_start=start,
        window_end=start + timedelta(seconds=10),
        request_count=len(latencies),
        error_count=errors,
        latency=ExponentialLatency.of(histogram),
        outputs={"norm": OutputMoments(count=served, mean=norm[0], variance=norm[1])} if served else {},
        similarity=SimilarityHistogram(reference_requests=64, counts=list(similarity)) if similarity else None,
        cpu_percent=10.0,
        ram_mb=100.0,
    )
