"""Telemetry windows: what a device observed about its model, as aggregates only.

Every request adds its latency to fixed histogram buckets and its output to running sums; at the
end of a window the recorder turns those into a `TelemetryWindow` and starts again. Nothing about
an individual input or output is kept, so nothing can leak: the window holds counts and moments.
The same recorder serves the real agent and the fleet simulator, so their telemetry is shaped
identically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from shared.messages.device import LatencyHistogram, ShadowAgreement, TelemetryWindow

# Bucket upper bounds in ms: fine at the bottom (edge latencies), coarse at the top.
LATENCY_BOUNDS_MS: tuple[float, ...] = (1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 250, 500, 1000)


@dataclass
class _Moments:
    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, values: np.ndarray) -> None:
        self.n += int(values.size)
        self.total += float(values.sum())
        self.total_sq += float(np.square(values).sum())

    def mean_std(self) -> tuple[float, float]:
        if self.n == 0:
            return 0.0, 0.0
        mean = self.total / self.n
        return mean, math.sqrt(max(self.total_sq / self.n - mean * mean, 0.0))


@dataclass
class WindowRecorder:
    """Accumulates one window of requests for one model digest."""

    digest: str
    started: datetime
    bounds_ms: tuple[float, ...] = LATENCY_BOUNDS_MS
    counts: list[int] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    norms: _Moments = field(default_factory=_Moments)
    values: _Moments = field(default_factory=_Moments)
    shadow_previous: str | None = None
    shadow_compared: int = 0
    shadow_agreed: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds_ms) + 1)

    def record(self, latency_ms: float, *, output: np.ndarray | None = None, error: bool = False) -> None:
        """One request: its latency, and its first output unless it failed."""
        self.requests += 1
        self.counts[int(np.searchsorted(self.bounds_ms, latency_ms, side="left"))] += 1
        if error:
            self.errors += 1
            return
        if output is not None:
            rows = output.reshape(output.shape[0], -1) if output.ndim > 1 else output.reshape(1, -1)
            self.norms.add(np.linalg.norm(rows.astype(np.float64), axis=1))
            self.values.add(rows.astype(np.float64))

    def record_shadow(self, *, previous_digest: str, agreed: bool) -> None:
        """The previous model ran on the same input; did it agree with the new one?"""
        self.shadow_previous = previous_digest
        self.shadow_compared += 1
        self.shadow_agreed += int(agreed)

    def close(self, *, device_id: str, ended: datetime, cpu_percent: float, ram_mb: float) -> TelemetryWindow:
        norm_mean, norm_std = self.norms.mean_std()
        value_mean, value_std = self.values.mean_std()
        stats = (
            {"norm_mean": norm_mean, "norm_std": norm_std, "value_mean": value_mean, "value_std": value_std}
            if self.norms.n
            else {}
        )
        shadow = None
        if self.shadow_previous and self.shadow_compared:
            shadow = ShadowAgreement(
                previous_digest=self.shadow_previous,
                compared=min(self.shadow_compared, self.requests),
                agreement_rate=self.shadow_agreed / self.shadow_compared,
            )
        return TelemetryWindow(
            device_id=device_id,
            model_digest=self.digest,
            window_start=self.started,
            window_end=ended,
            request_count=self.requests,
            error_count=self.errors,
            latency=LatencyHistogram(bounds_ms=list(self.bounds_ms), counts=list(self.counts)),
            output_stats=stats,
            shadow=shadow,
            cpu_percent=min(max(cpu_percent, 0.0), 100.0),
            ram_mb=max(ram_mb, 0.0),
        )


def embeddings_agree(a: np.ndarray, b: np.ndarray, *, min_cosine: float = 0.95) -> bool:
    """Shadow agreement for one request: cosine of the flattened outputs (top-1 for 2-class+ logits
    would be the other natural choice; embeddings are this platform's reference workload)."""
    x = a.astype(np.float64).ravel()
    y = b.astype(np.float64).ravel()
    denom = float(np.linalg.norm(x) * np.linalg.norm(y))
    return denom > 0 and float(x @ y) / denom >= min_cosine
