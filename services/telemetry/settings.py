"""The telemetry service's settings: the platform's, plus its buckets, retention and outputs."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from shared.settings import Settings


class TelemetrySettings(Settings):
    """`SLMOPS_*` environment variables of a telemetry process."""

    telemetry_bucket_seconds: int = Field(
        default=10, description="width of a time bucket: the resolution of every time range (divides 60)"
    )
    telemetry_retention_seconds: int = Field(
        default=6 * 3600, ge=60, description="how long cohort buckets are kept (memory grows with cohorts x this)"
    )
    telemetry_tick_seconds: float = Field(
        default=1.0, gt=0, description="how often the fold log is followed, rollups published and metrics refreshed"
    )
    telemetry_snapshot_seconds: float = Field(
        default=5.0, gt=0, description="how often changed aggregates are saved in KV telemetry"
    )
    telemetry_rollup_seconds: int = Field(
        default=60, ge=1, description="what one telemetry.rollup covers: a minute (a multiple of the bucket)"
    )
    telemetry_rollup_grace_seconds: float = Field(
        default=30.0, ge=0, description="how long after a rollup's period ends it waits for late windows"
    )
    telemetry_drift_period_seconds: int = Field(
        default=60, ge=1, description="drift is scored per closed period of this length (a multiple of the bucket)"
    )
    telemetry_drift_reference_periods: int = Field(
        default=5, ge=1, description="a digest's reference: the merge of its first periods, this many"
    )
    telemetry_drift_debounce: int = Field(
        default=2, ge=1, description="breaching periods in a row before drift.detected (one event per episode)"
    )
    telemetry_drift_min_requests: int = Field(
        default=500, ge=1, description="a period (or a reference) with fewer requests is not scored"
    )
    telemetry_metrics_port: int | None = Field(
        default=9464, ge=1, le=65535, description="port of Prometheus /metrics; unset = none"
    )

    @field_validator("telemetry_bucket_seconds")
    @classmethod
    def _divides_a_minute(cls, value: int) -> int:
        if value < 1 or 60 % value:
            raise ValueError(f"telemetry_bucket_seconds must divide 60 (1, 2, 5, 10, 15, 30, 60), got {value}")
        return value

    @model_validator(mode="after")
    def _periods_of_whole_buckets(self) -> TelemetrySettings:
        for name in ("telemetry_drift_period_seconds", "telemetry_rollup_seconds"):
            if getattr(self, name) % self.telemetry_bucket_seconds:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be a multiple of "
                    f"telemetry_bucket_seconds ({self.telemetry_bucket_seconds})"
                )
        return self
