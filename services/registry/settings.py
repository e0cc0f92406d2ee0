"""The registry's settings: the platform's, plus how long the download URLs it signs live, which
buckets other than the platform's it may read artifacts from, and how large an evaluation set may
grow once decompressed."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from shared.settings import Settings

DEFAULT_EVAL_SET_DECOMPRESSED_BYTES = 512 * 1024**2


class RegistrySettings(Settings):
    """`SLMOPS_*` environment variables of a registry process."""

    presign_ttl_seconds: int = Field(
        default=300, ge=10, le=7 * 24 * 3600, description="lifetime of the presigned download URLs devices get"
    )
    registry_allowed_buckets: Annotated[frozenset[str], NoDecode] = Field(
        default=frozenset(),
        description=(
            "SLMOPS_REGISTRY_ALLOWED_BUCKETS: comma-separated buckets, besides SLMOPS_S3_BUCKET, that "
            "registration commands may name (other systems' exports); empty: the platform's bucket only"
        ),
    )
    registry_eval_set_max_decompressed_bytes: int = Field(
        default=DEFAULT_EVAL_SET_DECOMPRESSED_BYTES,
        ge=1024,
        le=16 * 1024**3,
        description=(
            "SLMOPS_REGISTRY_EVAL_SET_MAX_DECOMPRESSED_BYTES: the most an evaluation set's arrays may take "
            "in memory, checked against the archive's headers before anything is decompressed"
        ),
    )

    @field_validator("registry_allowed_buckets", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(b.strip() for b in value.split(",") if b.strip())
        return value

    @property
    def presign_ttl(self) -> timedelta:
        return timedelta(seconds=self.presign_ttl_seconds)
