"""`FleetReport`: what a simulation did, as data (JSON with `--json`, a table otherwise).

Counts are of statuses actually acknowledged by JetStream and of device states at the moment of
the report; convergence is measured per device from the moment it saw its latest desired state to
the acknowledgement of its `active` status. CPU and memory are divided by the number of devices,
and the work shared between devices is listed separately, so nobody mistakes it for per-device work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Convergence(_Frozen):
    """Seconds from "saw the desired change" to "active acknowledged", over the converged devices."""

    devices: int = 0
    p50_s: float | None = None
    p95_s: float | None = None
    max_s: float | None = None

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Convergence:
        if not seconds:
            return cls()
        ordered = sorted(seconds)
        return cls(
            devices=len(ordered),
            p50_s=percentile(ordered, 50),
            p95_s=percentile(ordered, 95),
            max_s=ordered[-1],
        )


class ClassSummary(_Frozen):
    device_class: str
    devices: int
    speed_factor: float
    states: dict[str, int]
    convergence: Convergence


class SharedWork(_Frozen):
    """Work done once for many devices (the honest list of what the simulator shares)."""

    real_downloads: int = Field(description="artifacts downloaded for real from S3 (once per digest)")
    real_download_bytes: int
    download_url_requests: int = Field(description="registry download_url requests actually sent")
    download_urls_shared: bool = Field(description="devices on one connection reuse a URL per digest")
    measurements: int = Field(description="artifacts measured with real inference on this host")
    real_inference_devices: int
    real_inference_requests: int
    corrupted_copies_verified: int = Field(description="per-device corrupted copies run through verify_artifact")
    settings_digests: int = Field(default=0, description="distinct application settings hashed (once each)")


class Resources(_Frozen):
    cpu_seconds: float = Field(description="this process, all threads, since the simulator started")
    worker_cpu_seconds: float = Field(description="the inference worker process")
    cpu_seconds_per_device: float
    rss_baseline_mb: float = Field(description="process RSS before any device existed")
    rss_peak_mb: float
    rss_per_device_kb: float = Field(description="(peak - baseline) / devices")
    worker_rss_mb: float


class FleetReport(_Frozen):
    devices: int
    connections: int
    elapsed_s: float
    connected_s: float | None = Field(description="start to every device's first hello acknowledged")
    mix: dict[str, int]
    faults: dict[str, int]
    steps: dict[str, int] = Field(description="statuses acknowledged, by step")
    states: dict[str, int] = Field(description="devices by state now")
    classes: list[ClassSummary]
    convergence: Convergence
    messages: dict[str, int]
    messages_per_second: float
    events: dict[str, int] = Field(description="faults as they happened: crashes, returns, missed changes")
    shared: SharedWork
    resources: Resources


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (no interpolation: a real device's value)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
