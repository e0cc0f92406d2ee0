"""Payload pieces shared by several services' messages."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SHA256_HEX = r"^[0-9a-f]{64}$"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,62}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$"


class Frozen(BaseModel):
    """Strict, immutable value object (not itself a message); no NaN or infinity in any float, since
    JSON has no such numbers and a NaN compares unequal to itself (a record no lookup finds)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ObjectRef(Frozen):
    """An object in S3. `bucket` defaults to the platform's artifact bucket."""

    key: str = Field(min_length=1, max_length=1024)
    bucket: str | None = Field(default=None, min_length=3, max_length=63)


class CommandOutcome(Frozen):
    """Sent (best effort, core NATS) to the `Slmops-Reply-To` inbox a command carried, once decided.

    Commands travel through a durable work-queue stream, so a sender that wants to wait for the
    result names an inbox in a header instead of using request/reply; the durable event stream
    stays the record of what happened.
    """

    schema_version: Literal[1] = 1
    command_id: str
    status: Literal["applied", "unchanged", "rejected"]
    reason: str | None = None
    result: dict[str, Any] = Field(default_factory=dict)
