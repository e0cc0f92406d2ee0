"""The intake's settings: the platform's, plus how often and how patiently it sweeps the command stream."""

from __future__ import annotations

from pydantic import Field

from shared.settings import Settings


class IntakeSettings(Settings):
    """`SLMOPS_*` environment variables of an intake process."""

    intake_sweep_seconds: float = Field(
        default=10.0, gt=0, description="how often the command stream is checked for commands no service reads"
    )
    intake_grace_seconds: float = Field(
        default=60.0,
        ge=0,
        description=(
            "how long a declared command family may have no consumer on the server (its service not installed, "
            "or still starting) before its commands are dead-lettered"
        ),
    )
    intake_sweep_limit: int = Field(default=1000, ge=1, description="messages dead-lettered per sweep at most")
