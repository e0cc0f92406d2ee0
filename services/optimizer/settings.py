"""The optimizer's settings: the platform's, plus where profiles live and how candidates are measured."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import Settings


class OptimizerSettings(Settings):
    """`SLMOPS_*` environment variables of an optimizer process."""

    profiles_dir: Path | None = Field(default=None, description="device profiles; default deploy/profiles")
    optimizer_threads: int = Field(default=1, ge=1, description="intra-op threads when measuring latency")
    optimizer_concurrency: int = Field(default=2, ge=1, description="candidates built at once")
    optimizer_auto_profiles: str = Field(
        default="", description="comma-separated profiles to optimize every newly registered model for"
    )

    @property
    def auto_profiles(self) -> list[str]:
        return [p.strip() for p in self.optimizer_auto_profiles.split(",") if p.strip()]
