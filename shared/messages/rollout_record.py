"""A rollout's state (KV `rollouts`, key = rollout id, written with compare-and-set): the frozen
plan and how far it got. The rollout service is its only writer; `slmops rollout show` and other
systems read it.

The plan is frozen at start (the inventory moves on; the rollout must not): each wave's devices in
groups of one class and one artifact (an index into `artifacts`), so ten thousand devices take about
220 KiB of the bucket's 512 KiB values.
What each device ran before is not here but under `<rollout id>.previous.<device id>` in the same
bucket, written before the device's first desired-state write, so a revert restores exactly it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from shared.messages.common import NAME_PATTERN, SHA256_HEX, VERSION_PATTERN, Frozen
from shared.messages.device import TRACEPARENT_PATTERN, DeviceId, SmokeInput
from shared.messages.rollout import RolloutId, RolloutState, StartRollout, Verdict

MAX_EXCLUDED_SHOWN = 100  # excluded devices listed with their reason; the rest are counted


class ArtifactChoice(Frozen):
    """One artifact some of the rollout's devices get: the base model (variant null) or a variant."""

    variant: str | None = Field(default=None, pattern=NAME_PATTERN)
    digest: str = Field(pattern=SHA256_HEX)
    size_bytes: int = Field(ge=1)
    signature: str = Field(min_length=1)


class GateResult(Frozen):
    """One gate judged on one wave, for the wave or one class of it."""

    gate: int = Field(ge=0, description="index into the wave's gates")
    device_class: str | None = Field(default=None, description="null = the whole wave")
    verdict: Verdict
    observed: float | None = None
    baseline: float | None = None
    samples: int = Field(ge=0)
    reason: str = Field(max_length=2000)


class DeviceGroup(Frozen):
    """Devices of one class that get one artifact: the plan stored without repeating either per device."""

    device_class: str = Field(pattern=NAME_PATTERN)
    artifact: int = Field(ge=0, description="index into the record's artifacts")
    device_ids: list[DeviceId]


class WaveRecord(Frozen):
    """One wave: the devices it adds and where it stands."""

    index: int = Field(ge=0)
    percent: float = Field(gt=0, le=100)
    groups: list[DeviceGroup] = Field(default_factory=list)
    started_at: AwareDatetime | None = None
    installed_at: AwareDatetime | None = Field(default=None, description="when enough of it was healthy")
    verdict: Verdict | None = None
    gates: list[GateResult] = Field(default_factory=list)

    @property
    def devices(self) -> dict[str, int]:
        """Device id -> artifact index, in plan order."""
        return {d: g.artifact for g in self.groups for d in g.device_ids}

    @property
    def classes(self) -> dict[str, str]:
        """Device id -> its class when planned."""
        return {d: g.device_class for g in self.groups for d in g.device_ids}

    @property
    def by_class(self) -> dict[str, int]:
        """Class -> how many of the wave's devices are of it."""
        counts: dict[str, int] = {}
        for g in self.groups:
            counts[g.device_class] = counts.get(g.device_class, 0) + len(g.device_ids)
        return counts


class RolloutRecord(Frozen):
    schema_version: Literal[1] = 1
    rollout_id: RolloutId
    spec: StartRollout
    model: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN, description="what spec.ref resolved to at start")
    previous_digests: list[str] = Field(
        default_factory=list, description="what the targets ran at start: the gates' baseline digests"
    )
    state: RolloutState
    wave: int = Field(ge=0, description="the wave in progress (or the last one, once ended)")
    paused_from: RolloutState | None = Field(default=None, description="what resume returns to")
    trigger: Literal["gate", "install", "manual"] | None = Field(default=None, description="why it is rolling back")
    reason: str | None = Field(default=None, max_length=2000, description="the last transition's reason")
    traceparent: str | None = Field(default=None, pattern=TRACEPARENT_PATTERN, description="the rollout's root span")
    trace_parent_id: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{16}$", description="the root span's parent: the span of the command"
    )
    artifacts: list[ArtifactChoice]
    smoke_input: SmokeInput | None = Field(
        default=None, description="the version's evaluation set, run before a switch"
    )
    waves: list[WaveRecord] = Field(min_length=1)
    excluded: int = Field(default=0, ge=0)
    excluded_shown: dict[DeviceId, str] = Field(default_factory=dict, max_length=MAX_EXCLUDED_SHOWN)
    reverted: int = Field(default=0, ge=0, description="devices whose desired state was put back")
    transitions: int = Field(default=0, ge=0, description="state changes so far: each one's event id")
    created_at: AwareDatetime
    updated_at: AwareDatetime
