"""The registry's settings: the platform's, plus how long the download URLs it signs live."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from shared.settings import Settings


class RegistrySettings(Settings):
    """`SLMOPS_*` environment variables of a registry process."""

    presign_ttl_seconds: int = Field(
        default=300, ge=10, le=7 * 24 * 3600, description="lifetime of the presigned download URLs devices get"
    )

    @property
    def presign_ttl(self) -> timedelta:
        return timedelta(seconds=self.presign_ttl_seconds)
