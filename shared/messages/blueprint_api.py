"""The blueprints service's contract: the requests that store and show blueprints, what it keeps in
KV `blueprints`, and the events its decisions leave behind.

`slmops apply -f`, `slmops diff -f` and `slmops blueprint list|show|delete` are request/reply
(`slmops.rpc.blueprints.*`) rather than commands: an apply is refused or accepted as a whole, with
every problem named, and the caller waits for that answer. Other systems use the same requests.

KV `blueprints` holds, per blueprint `NAME`:

    spec.NAME     StoredBlueprint    what was applied, with its generation (+1 on every change)
    status.NAME   BlueprintStatus    what the controller did about it, and the position it reflects

Both are written with compare-and-set on the revision read, by the blueprints service only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from shared.messages.blueprint import Blueprint
from shared.messages.common import NAME_PATTERN, SHA256_HEX, VERSION_PATTERN, Frozen
from shared.messages.device import DeviceId
from shared.messages.envelope import Message, register_message
from shared.messages.rollout import RolloutId, RolloutState
from shared.messages.rpc import Rpc

MAX_APPLIED = 100  # blueprints in one apply: a file's documents (services.blueprints.load.MAX_DOCUMENTS)
MAX_GROUP_DEVICES_SHOWN = 50  # device ids listed per group in a reply; the count is always exact
MAX_GROUPS = 500
MAX_LOST_SHOWN = 200
MAX_ROLLOUTS_KEPT = 64  # per blueprint in its status, the newest: 10,000 devices of one group take ten
MAX_OPTIMIZATIONS_KEPT = 64
MAX_REASON_CHARS = 2000
MAX_EVENT_ACTIONS = 64  # in one blueprint.reconciled; more are counted in actions_omitted

ApplyAction = Literal["created", "configured", "unchanged", "deleted"]


class StoredBlueprint(Frozen):
    """KV `blueprints` key `spec.NAME`: a blueprint as applied."""

    schema_version: Literal[1] = 1
    blueprint: Blueprint
    generation: int = Field(ge=1, description="1 when created, +1 on every change of the document")
    digest: str = Field(pattern=SHA256_HEX, description="sha256 of the document as canonical JSON")
    applied_at: AwareDatetime


# --- what the controller remembers (KV `blueprints` key `status.NAME`) -----------------------

OptimizationState = Literal["requested", "built", "failed"]


class OptimizationRecord(Frozen):
    """An optimize request the controller sent for a version and profile, and how it ended: `built`
    once the registry holds the profile's variant, `failed` with the optimizer's reason."""

    version: str = Field(pattern=VERSION_PATTERN)
    profile: str = Field(pattern=NAME_PATTERN)
    state: OptimizationState
    command_id: str
    reason: str | None = Field(default=None, max_length=MAX_REASON_CHARS)
    at: AwareDatetime


class StartedRollout(Frozen):
    """A rollout the controller started, for which group, and the last state it saw it in."""

    rollout_id: RolloutId
    version: str = Field(pattern=VERSION_PATTERN)
    group: str = Field(description="the override's name, or `default` for the blueprint's own devices")
    generation: int = Field(ge=1, description="the blueprint's generation it was started for")
    devices: int = Field(ge=0)
    state: RolloutState | Literal["refused"] = "pending"
    reason: str | None = Field(default=None, max_length=MAX_REASON_CHARS)
    paused_for_window: bool = Field(default=False, description="the controller paused it outside its window")
    started_at: AwareDatetime


class BlueprintStatus(Frozen):
    """KV `blueprints` key `status.NAME`: the controller's memory of one blueprint.

    Everything else it decides from is observed fresh each pass (the inventory, desired states,
    rollouts, the registry); this is only what cannot be observed: what it asked for and how that went.
    """

    schema_version: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN)
    generation: int = Field(ge=1, description="the blueprint generation this status reflects")
    optimizations: list[OptimizationRecord] = Field(default_factory=list, max_length=MAX_OPTIMIZATIONS_KEPT)
    rollouts: list[StartedRollout] = Field(default_factory=list, max_length=MAX_ROLLOUTS_KEPT)
    promoted: list[str] = Field(default_factory=list, max_length=MAX_ROLLOUTS_KEPT, description="versions promoted")
    version: str | None = Field(default=None, description="what the tracked alias named at the last pass")
    converged: int = Field(default=0, ge=0, description="owned devices on what the blueprint says, at the last pass")
    pending: int = Field(default=0, ge=0, description="owned devices not yet on it (rolling out or waiting)")
    summary: str = Field(default="", max_length=MAX_REASON_CHARS, description="the last pass's outcome, in words")
    updated_at: AwareDatetime


# --- replies -------------------------------------------------------------------------------


class RunningArtifact(Frozen):
    """What a device serves (or is told to serve), as the registry names it."""

    model: str
    version: str
    variant: str
    profile: str | None = None


class TargetArtifact(Frozen):
    """What a device's blueprint says it should run (`services.blueprints.diff.Target`)."""

    model: str
    version: str | None = Field(description="null: the tracked alias is not set")
    profile: str | None = Field(description="the class's profile; null = the best variant the device can run")
    settings: str | None = Field(description="sha256 of the override's config; null = none")


class DeviceGroupChange(Frozen):
    """Devices that change (or not) the same way for the same reason (`services.blueprints.diff.DiffGroup`)."""

    blueprint: str | None = Field(description="the owner after applying; null for released devices")
    override: str | None = None
    device_class: str
    before: RunningArtifact | None = Field(description="null: it runs nothing known")
    after: TargetArtifact | None = Field(description="null: released, it keeps what it runs")
    reason: str
    count: int = Field(ge=1)
    devices: list[DeviceId] = Field(max_length=MAX_GROUP_DEVICES_SHOWN, description="the first ones, sorted")


class AppliedBlueprint(Frozen):
    name: str = Field(pattern=NAME_PATTERN)
    action: ApplyAction
    generation: int = Field(ge=0, description="0 when deleted")


class ApplyResult(Frozen):
    """What an apply did (or, with dry_run, would do): per blueprint, and per device group."""

    dry_run: bool
    blueprints: list[AppliedBlueprint] = Field(max_length=MAX_APPLIED)
    groups: list[DeviceGroupChange] = Field(max_length=MAX_GROUPS)
    groups_omitted: int = Field(default=0, ge=0, description="groups beyond MAX_GROUPS, not listed")


class BlueprintSummary(Frozen):
    name: str
    model: str
    track: str
    priority: int
    generation: int
    devices: int = Field(ge=0, description="devices it owns")
    lost: int = Field(ge=0, description="devices it selects that a higher-priority blueprint owns")
    summary: str = Field(description="the controller's last outcome for it")
    applied_at: AwareDatetime


class BlueprintDetail(Frozen):
    stored: StoredBlueprint
    devices: int = Field(ge=0, description="devices it owns")
    lost: dict[DeviceId, str] = Field(description="device -> the blueprint that owns it instead (the first ones)")
    lost_count: int = Field(ge=0)
    groups: list[DeviceGroupChange] = Field(max_length=MAX_GROUPS, description="its devices, what they run, why")
    status: BlueprintStatus | None = None


# --- requests (request/reply on slmops.rpc.blueprints.*) -------------------------------------


@register_message
class ApplyBlueprints(Message):
    """Store these blueprints (all, or none if any is refused); with `dry_run`, only say what would change.

    Refused, with the field and the reason: what `services.blueprints.load` refuses (the resource's own
    rules, unknown classes, profiles, models, metrics), a blueprint selecting no device, and a priority
    tie on a device. Applying a document equal to the stored one changes nothing.
    """

    TYPE = "blueprints.apply"

    blueprints: list[Blueprint] = Field(min_length=1, max_length=MAX_APPLIED)
    dry_run: bool = False
    source: str | None = Field(default=None, max_length=256, description="the file, for messages")


@register_message
class DeleteBlueprint(Message):
    """Forget a blueprint: its devices keep what they run (released), its rollouts run on."""

    TYPE = "blueprints.delete"

    name: str = Field(pattern=NAME_PATTERN)


@register_message
class ListBlueprints(Message):
    TYPE = "blueprints.list"


@register_message
class GetBlueprint(Message):
    TYPE = "blueprints.get"

    name: str = Field(pattern=NAME_PATTERN)
    groups: bool = Field(
        default=True, description="false: leave out the device groups (a diff of the fleet), for a poller"
    )


APPLY_BLUEPRINTS = Rpc(ApplyBlueprints, ApplyResult)
DELETE_BLUEPRINT = Rpc(DeleteBlueprint, AppliedBlueprint)
LIST_BLUEPRINTS = Rpc(ListBlueprints, list[BlueprintSummary])
GET_BLUEPRINT = Rpc(GetBlueprint, BlueprintDetail)


# --- events --------------------------------------------------------------------------------


@register_message
class BlueprintApplied(Message):
    """A blueprint was created, changed or deleted (an apply that changed nothing emits nothing)."""

    TYPE = "blueprint.applied"

    name: str = Field(pattern=NAME_PATTERN)
    action: Literal["created", "configured", "deleted"]
    generation: int = Field(ge=0)
    digest: str | None = Field(default=None, pattern=SHA256_HEX, description="null when deleted")


ActionKind = Literal["optimize", "start_rollout", "promote", "pause_rollout", "resume_rollout"]


class ReconcileAction(Frozen):
    """One thing the controller did."""

    kind: ActionKind
    detail: str = Field(max_length=MAX_REASON_CHARS, description="in words")
    version: str | None = Field(default=None, pattern=VERSION_PATTERN)
    profile: str | None = None
    rollout_id: RolloutId | None = None
    group: str | None = None
    devices: int | None = Field(default=None, ge=0)


@register_message
class BlueprintReconciled(Message):
    """The controller's decision for one blueprint changed: what it started, or why it does nothing.

    Emitted when the outcome changes, not on every pass (a fleet that stays converged is quiet).
    """

    TYPE = "blueprint.reconciled"

    name: str = Field(pattern=NAME_PATTERN)
    generation: int = Field(ge=1)
    version: str | None = Field(default=None, pattern=VERSION_PATTERN, description="what the tracked alias names")
    actions: list[ReconcileAction] = Field(default_factory=list, max_length=MAX_EVENT_ACTIONS)
    actions_omitted: int = Field(default=0, ge=0, description="actions of this pass beyond MAX_EVENT_ACTIONS")
    converged: int = Field(ge=0, description="owned devices already on what the blueprint says")
    pending: int = Field(ge=0, description="owned devices not yet on it")
    summary: str = Field(max_length=MAX_REASON_CHARS, description="what it did, or why it did nothing")
