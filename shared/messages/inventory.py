"""The device inventory (KV `devices`, one key per device id): what the rollout service knows of each
device, folded from its hellos (which are also its heartbeats) and its install statuses.

The rollout service is its only writer (DESIGN.md); operators and other systems read it. A record
says when the device was last heard from, not whether it is online: that depends on the reader's
clock and heartbeat period (`services/rollout/inventory.py` decides it, as a pure function).
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from shared.messages.common import NAME_PATTERN, Frozen
from shared.messages.device import (
    MAX_CAPABILITIES,
    ORT_VERSION_PATTERN,
    Capability,
    DeviceId,
    Digest,
    InstallStep,
    Labels,
)


class LastStatus(Frozen):
    """The latest install step a device reported, for the desired state it acted on."""

    desired_revision: int = Field(ge=1)
    digest: Digest
    step: InstallStep
    active_digest: Digest | None = None
    config_digest: Digest | None = Field(default=None, description="the settings served with active_digest")
    reason: str | None = Field(default=None, max_length=2000)
    at: AwareDatetime = Field(description="the status envelope's time")


class DeviceRecord(Frozen):
    """One device: its capabilities and labels as its last hello said, what it runs, when it was seen."""

    schema_version: Literal[1] = 1
    device_id: DeviceId
    device_class: str = Field(pattern=NAME_PATTERN)
    arch: str = Field(min_length=1, max_length=32)
    ram_mb: int = Field(ge=1)
    cpu_count: int = Field(ge=1)
    accelerators: list[Capability] = Field(default_factory=list, max_length=MAX_CAPABILITIES)
    onnxruntime_version: str = Field(pattern=ORT_VERSION_PATTERN)
    execution_providers: list[Capability] = Field(default_factory=list, max_length=MAX_CAPABILITIES)
    labels: Labels = Field(default_factory=dict)
    agent_version: str = Field(min_length=1, max_length=64)
    active_digest: Digest | None = Field(default=None, description="serving now, as last reported")
    active_config_digest: Digest | None = Field(
        default=None, description="the settings served with it (sha256 of DesiredState.config); null = none"
    )
    active_at: AwareDatetime = Field(
        description="the report `active_digest` and `active_config_digest` come from (the newest that names a model)"
    )
    first_seen: AwareDatetime
    hello_at: AwareDatetime = Field(description="the hello the capabilities and labels come from")
    last_seen: AwareDatetime = Field(description="the latest hello or status")
    last_status: LastStatus | None = None
