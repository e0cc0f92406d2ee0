"""The rollout service's settings: the platform's, plus how often its loop looks again."""

from __future__ import annotations

from pydantic import Field

from shared.settings import Settings


class RolloutSettings(Settings):
    """`SLMOPS_*` environment variables of a rollout process."""

    rollout_tick_seconds: float = Field(
        default=0.5, gt=0, le=60, description="seconds between passes of the reconcile loop over active rollouts"
    )
