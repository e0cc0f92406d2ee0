"""The blueprints service's settings: the platform's, plus how often its controller looks again."""

from __future__ import annotations

from pydantic import Field

from shared.settings import Settings


class BlueprintsSettings(Settings):
    """`SLMOPS_*` environment variables of a blueprints process."""

    blueprints_tick_seconds: float = Field(
        default=2.0,
        gt=0,
        le=300,
        description="seconds between controller passes when nothing wakes it (a changed device or rollout does)",
    )
    blueprints_metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="port of Prometheus /metrics; unset = none"
    )
