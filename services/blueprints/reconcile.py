"""What the controller does about one blueprint: a pure function of what it observes and remembers.

    observe (inventory, desired states, rollouts, registry, the clock, the blueprint's status)
      -> decide (this module)  -> apply (commands, events)  -> save (the new status, CAS)

Each pass looks at the whole picture again (level-triggered, STYLE.md), so a missed event, a
restart or a device that enrols late changes nothing about the outcome: what is not yet as the
blueprint says is acted on, what is, is left alone.

**Groups.** A blueprint's devices fall into groups: each override's (by name) and `default` for
the rest. A group's target is a version (the override's pin, else the version the tracked alias
names), the variant built with the class's profile, the override's settings, and a rollout policy
(the override's, else the blueprint's; a pin is delivered in one ungated wave: it is a decision,
not a canary).

**A device is converged** when its desired state names the blueprint's model, the group's version
and settings, and, where its class has a profile whose variant exists, that variant. A device the
blueprint's own rollout of this version already wrote is converged whatever variant the rollout
resolved for it (the planner falls back when a device cannot run the profile's variant; asking
again would change nothing).

**Pending** devices (not converged, not in any active rollout) of a group get one rollout, at most
`MAX_SELECTED_DEVICES` of them, the first by id; the rest get theirs once it ends. The rollout's
id is derived from the blueprint, its generation, the version, the group and the exact devices, so
the same situation never starts two rollouts, and a set of devices tried once (refused, or
excluded by the planner) is not tried again until something changes. A rollout of a version that
was rolled back or aborted blocks its group at that version until the alias moves on or the
blueprint changes: the platform does not retry a version its gates rejected.

**Before a rollout**, every class present with a profile must have that profile's variant of the
version, or an optimization that failed or timed out: the controller requests what is missing (one
`optimize.request` per version and profile, its id derived from both, so two blueprints asking
for the same build send one command) and waits. The newest registered version is built too, so
variants are ready by the time the alias moves to it.

**Maintenance windows**: a group with one starts rollouts only inside it, and its running rollout
is paused when the window closes and resumed when it opens (only a pause the controller made).

**Promotion**: with `promote`, once a rollout of the tracked version completed and every device of
the track-following groups is converged, alias `to` is moved to the version, once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from services.blueprints.ownership import Owner
from shared.messages.blueprint import Blueprint, MaintenanceWindow, Override, RolloutPolicy
from shared.messages.blueprint_api import (
    MAX_EVENT_ACTIONS,
    MAX_OPTIMIZATIONS_KEPT,
    MAX_ROLLOUTS_KEPT,
    ActionKind,
    BlueprintReconciled,
    BlueprintStatus,
    OptimizationRecord,
    ReconcileAction,
    StartedRollout,
    StoredBlueprint,
)
from shared.messages.common import config_digest
from shared.messages.device import DesiredState
from shared.messages.envelope import Message, deterministic_id
from shared.messages.inventory import DeviceRecord
from shared.messages.optimizer import OptimizeModel
from shared.messages.registry import ModelDetail, SetAlias, VariantRecord
from shared.messages.rollout import (
    MAX_SELECTED_DEVICES,
    PauseRollout,
    ResumeRollout,
    Selector,
    StartRollout,
    Wave,
)
from shared.messages.rollout_record import RolloutRecord

DEFAULT_GROUP = "default"
TERMINAL = frozenset({"completed", "rolled_back", "aborted"})
FAILED = frozenset({"rolled_back", "aborted"})
# An optimization with no variant and no failure event after this long is given up on: the rollout
# goes ahead with the best variant each device can run (a lost command must not stall a fleet).
OPTIMIZE_TIMEOUT = timedelta(minutes=30)
# A rollout asked for and not in the rollout service's records after this long is reported (the
# command is durable: it may still start, and the controller never asks twice for the same one).
UNACKNOWLEDGED = timedelta(seconds=60)
# A blueprint with many overrides starts this many group rollouts a pass, the rest on the next ones.
MAX_STARTS_PER_PASS = 16

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, kw_only=True)
class Observations:
    """Everything one pass decides from (the service gathers it; nothing here does I/O).

    Args:
        now: the pass's clock.
        stored: the blueprint as applied.
        status: what the controller remembers of it; None before its first pass.
        owned: device id -> its owner, for the devices this blueprint owns.
        devices: the inventory, by id.
        desired: device id -> its desired state, for devices that have one.
        rollouts: every rollout record, by id.
        tracked: the version the tracked alias names, with its variants and aliases; None: not set.
        latest: the model's newest version, to build its variants early; None: no model.
        pinned: pinned version -> its detail; a pin that is not registered is absent.
    """

    now: datetime
    stored: StoredBlueprint
    status: BlueprintStatus | None
    owned: Mapping[str, Owner]
    devices: Mapping[str, DeviceRecord]
    desired: Mapping[str, DesiredState]
    rollouts: Mapping[str, RolloutRecord]
    tracked: ModelDetail | None
    latest: ModelDetail | None = None
    pinned: Mapping[str, ModelDetail] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What to do, and what to remember.

    Args:
        commands: (command, deterministic id) to send, in order (the service waits for the verdict
            of those that answer quickly: all but optimize requests).
        status: the blueprint's status after this pass.
        event: the `blueprint.reconciled` event when the outcome changed; else None (its id is the
            caller's to derive from the status revision the pass read, so a repeat of the same pass
            after a crash publishes it once).
    """

    commands: Sequence[tuple[Message, str]]
    status: BlueprintStatus
    event: BlueprintReconciled | None


@dataclass(frozen=True, kw_only=True)
class _Group:
    name: str
    override: Override | None
    version: str | None
    policy: RolloutPolicy
    pinned: bool
    config: dict[str, object] | None
    config_digest: str | None
    devices: list[str]


def decide(obs: Observations) -> Decision:
    """One pass for one blueprint (module docstring: the rules)."""
    blueprint = obs.stored.blueprint
    generation = obs.stored.generation
    status = _fresh_status(obs)
    commands, actions, status, building = _builds(obs, status)
    resumed, resume_actions, status = _stale_pauses(obs, status)
    commands += resumed
    actions += resume_actions
    notes: list[str] = []
    converged = pending = track_pending = 0
    busy = _busy_devices(obs.rollouts)
    tracked = obs.tracked.version.version if obs.tracked else None
    starts = 0
    for group in _groups(blueprint, obs.owned, tracked):
        if starts >= MAX_STARTS_PER_PASS:
            notes.append(f"{group.name}: next pass (at most {MAX_STARTS_PER_PASS} rollouts start in one)")
            continue
        step = _decide_group(obs, group, status, busy=busy, building=building)
        starts += sum(a.kind == "start_rollout" for a in step.actions)
        commands += step.commands
        actions += step.actions
        notes += [step.note] if step.note else []
        status = step.status
        converged += step.converged
        pending += step.pending
        track_pending += step.pending if step.follows_track else 0
    promote_commands, promote_actions, status = _promotion(obs, status, track_pending)
    commands += promote_commands
    actions += promote_actions
    summary = _summary(actions, notes, converged=converged, obs=obs)
    status = _with(status, summary=summary, version=tracked, converged=converged, pending=pending, updated_at=obs.now)
    previous = obs.status
    changed = previous is None or previous.summary != summary or previous.generation != generation
    event = None
    if actions or changed:
        event = BlueprintReconciled(
            name=blueprint.name,
            generation=generation,
            version=tracked,
            actions=actions[:MAX_EVENT_ACTIONS],
            actions_omitted=max(0, len(actions) - MAX_EVENT_ACTIONS),
            converged=converged,
            pending=pending,
            summary=summary,
        )
    return Decision(commands=commands, status=status, event=event)


@dataclass(frozen=True, kw_only=True)
class _Step:
    """One group's part of a pass."""

    status: BlueprintStatus
    converged: int = 0
    pending: int = 0
    follows_track: bool = False
    commands: list[tuple[Message, str]] = field(default_factory=list)
    actions: list[ReconcileAction] = field(default_factory=list)
    note: str | None = None


def _decide_group(
    obs: Observations, group: _Group, status: BlueprintStatus, *, busy: set[str], building: set[tuple[str, str]]
) -> _Step:
    """How many of the group's devices are where they should be, and what to do for the rest."""
    spec = obs.stored.blueprint.spec
    if group.version is None:
        unset = f"alias {spec.track} of {spec.model} is not set: nothing to roll out"
        return _Step(status=status, pending=len(group.devices), follows_track=True, note=unset)
    detail = obs.pinned.get(group.version) if group.pinned else obs.tracked
    if detail is None:
        unknown = f"{group.name}: pinned version {group.version} is not registered"
        return _Step(status=status, pending=len(group.devices), note=unknown)
    generation = obs.stored.generation
    mine = [r for r in status.rollouts if r.group == group.name and r.generation == generation]
    ours = {r.rollout_id for r in mine if r.version == group.version}
    # A device in a running rollout is not converged yet, whatever its desired state says: the
    # rollout may still revert it.
    done = {d for d in group.devices if d not in busy and _converged(obs, d, group, detail, ours)}
    waiting = [d for d in group.devices if d not in done]
    pending = [d for d in waiting if d not in busy]
    window_commands, window_actions, status = _window(obs, group, [r for r in mine if r.state not in TERMINAL], status)
    step = _Step(
        status=status,
        converged=len(done),
        pending=len(waiting),
        follows_track=not group.pinned,
        commands=window_commands,
        actions=window_actions,
    )
    if not waiting:
        return step
    ever = [r for r in status.rollouts if r.group == group.name]
    note = _why_not_now(obs, group, mine, ever, waiting=waiting, pending=pending, building=building)
    if note is not None:
        return replace(step, note=note)
    chosen = sorted(pending)[:MAX_SELECTED_DEVICES]
    rollout_id = rollout_id_for(obs.stored, group.version, group.name, chosen)
    tried = next((r for r in status.rollouts if r.rollout_id == rollout_id), None)
    first_install = all(d not in obs.desired for d in chosen)
    command = start_command(obs.stored.blueprint, group, rollout_id, chosen, first_install=first_install)
    if tried is not None:
        if tried.state in TERMINAL or tried.state == "refused":
            note = (
                f"{group.name}: {len(chosen)} devices were tried by {rollout_id} ({tried.state}"
                f"{': ' + tried.reason if tried.reason else ''}); waiting for a change"
            )
            return replace(step, note=note)
        # Asked for, and no record of it: not handled yet, or refused with no verdict in time (a
        # restarting rollout service). Asking again, once a period, gets it handled or its reason.
        attempt = int((obs.now - tried.started_at) / UNACKNOWLEDGED)
        waiting_note = f"{group.name}: rollout {rollout_id} asked for at {tried.started_at:%H:%M:%S}, not started yet"
        if attempt == 0:
            return replace(step, note=waiting_note)
        again = (command, deterministic_id("blueprint-rollout", rollout_id, str(attempt)))
        return replace(step, note=waiting_note + f"; asked again ({attempt})", commands=[*window_commands, again])
    started = StartedRollout(
        rollout_id=rollout_id,
        version=group.version,
        group=group.name,
        generation=generation,
        devices=len(chosen),
        started_at=obs.now,
    )
    action = ReconcileAction(
        kind="start_rollout",
        detail=f"rollout {rollout_id} of {spec.model} {group.version} to {len(chosen)} devices ({group.name})"
        + (_NO_BASELINE if first_install and _compares(group.policy) else ""),
        version=group.version,
        rollout_id=rollout_id,
        group=group.name,
        devices=len(chosen),
    )
    return replace(
        step,
        status=_remember_rollout(status, started),
        commands=[*window_commands, (command, deterministic_id("blueprint-rollout", rollout_id))],
        actions=[*window_actions, action],
    )


def _why_not_now(
    obs: Observations,
    group: _Group,
    mine: Sequence[StartedRollout],
    ever: Sequence[StartedRollout],
    *,
    waiting: Sequence[str],
    pending: Sequence[str],
    building: set[tuple[str, str]],
) -> str | None:
    """Why the group's waiting devices get no rollout this pass, in words; None: they get one."""
    failed = [r for r in mine if r.version == group.version and r.state in FAILED]
    if failed:
        last = failed[-1]
        return (
            f"{group.name}: rollout {last.rollout_id} of {group.version} was {last.state.replace('_', ' ')}"
            f"{': ' + last.reason if last.reason else ''}; waiting for a new version or a changed blueprint"
        )
    # One canary sequence per group at a time, whatever version or generation started it: devices
    # beyond one rollout's MAX_SELECTED_DEVICES, or a version the alias moved to meanwhile, wait.
    running = [r for r in ever if (rec := obs.rollouts.get(r.rollout_id)) is not None and rec.state not in TERMINAL]
    if running and pending:
        return f"{group.name}: {len(pending)} more devices wait for rollout {running[-1].rollout_id} to end"
    if not pending:
        paused = [r for r in mine if r.state == "paused" and not r.paused_for_window]
        if paused:
            last = paused[-1]
            return (
                f"{group.name}: rollout {last.rollout_id} of {last.version} is paused"
                f"{': ' + last.reason if last.reason else ''} (slmops rollout resume or rollback)"
            )
        return f"{group.name}: {len(waiting)} devices rolling out {group.version}"
    profiles = obs.stored.blueprint.spec.profiles
    classes = {obs.devices[d].device_class for d in pending if d in obs.devices}
    missing = sorted(c for c in classes if (group.version or "", profiles.get(c, "")) in building)
    if missing:
        return f"{group.name}: waiting for the optimizer to build {group.version} for {', '.join(missing)}"
    window = group.policy.maintenance_window
    if window is not None and not in_window(window, obs.now):
        return f"{group.name}: {len(pending)} devices wait for the maintenance window {_window_text(window)}"
    return None


# --- groups and convergence ----------------------------------------------------------------


def _groups(blueprint: Blueprint, owned: Mapping[str, Owner], tracked: str | None) -> list[_Group]:
    spec = blueprint.spec
    members: dict[str, list[str]] = defaultdict(list)
    overrides: dict[str, Override | None] = {DEFAULT_GROUP: None}
    for device_id, owner in sorted(owned.items()):
        name = owner.override.name if owner.override else DEFAULT_GROUP
        overrides[name] = owner.override
        members[name].append(device_id)
    groups = []
    for name, devices in sorted(members.items()):
        override = overrides[name]
        pin = override.pin if override else None
        groups.append(
            _Group(
                name=name,
                override=override,
                version=pin or tracked,
                policy=(override.rollout if override and override.rollout else spec.rollout),
                pinned=pin is not None,
                config=override.config if override else None,
                config_digest=config_digest(override.config) if override and override.config is not None else None,
                devices=devices,
            )
        )
    return groups


def _converged(obs: Observations, device_id: str, group: _Group, detail: ModelDetail, ours: set[str]) -> bool:
    desired = obs.desired.get(device_id)
    spec = obs.stored.blueprint.spec
    if desired is None or desired.model != spec.model or desired.version != group.version:
        return False
    have = config_digest(desired.config) if desired.config is not None else None
    if have != group.config_digest:
        return False
    if desired.rollout_id is not None and desired.rollout_id in ours:
        return True
    device = obs.devices.get(device_id)
    profile = spec.profiles.get(device.device_class) if device else None
    built = profile_variant(detail, profile) if profile else None
    return built is None or desired.variant == built.variant


def profile_variant(detail: ModelDetail, profile: str) -> VariantRecord | None:
    """The version's variant the optimizer built with `profile` (its recipe names it), if any."""
    for variant in detail.variants:
        if variant.profile == profile:
            return variant
    return None


def _busy_devices(rollouts: Mapping[str, RolloutRecord]) -> set[str]:
    """Devices of rollouts still running: the rollout service refuses a second rollout on them."""
    return {
        d
        for record in rollouts.values()
        if record.state not in TERMINAL
        for wave in record.waves
        for g in wave.groups
        for d in g.device_ids
    }


# --- builds ----------------------------------------------------------------------------------


def _builds(
    obs: Observations, status: BlueprintStatus
) -> tuple[list[tuple[Message, str]], list[ReconcileAction], BlueprintStatus, set[tuple[str, str]]]:
    """Optimize requests for the tracked and newest versions' missing profile variants; and the
    (version, profile) builds a rollout must still wait for."""
    spec = obs.stored.blueprint.spec
    classes = {obs.devices[d].device_class for d in obs.owned if d in obs.devices}
    profiles = sorted({spec.profiles[c] for c in classes if c in spec.profiles})
    commands: list[tuple[Message, str]] = []
    actions: list[ReconcileAction] = []
    waiting: set[tuple[str, str]] = set()
    details = [d for d in (obs.tracked, obs.latest) if d is not None]
    seen: set[str] = set()
    for detail in details:
        version = detail.version.version
        if version in seen:
            continue
        seen.add(version)
        for profile in profiles:
            record = next((o for o in status.optimizations if (o.version, o.profile) == (version, profile)), None)
            if profile_variant(detail, profile) is not None:
                if record is not None and record.state == "requested":
                    status = _replace_optimization(status, _with(record, state="built"))
                continue
            if record is None:
                if detail.version.eval_set is None:
                    continue  # nothing to measure candidates against: the optimizer would refuse it
                command_id = deterministic_id("blueprint-optimize", detail.version.artifact.digest, profile)
                commands.append((OptimizeModel(name=spec.model, version=version, profile=profile), command_id))
                status = _remember_optimization(
                    status,
                    OptimizationRecord(
                        version=version, profile=profile, state="requested", command_id=command_id, at=obs.now
                    ),
                )
                actions.append(
                    ReconcileAction(
                        kind="optimize",
                        detail=f"build {spec.model} {version} for profile {profile}",
                        version=version,
                        profile=profile,
                    )
                )
                waiting.add((version, profile))
            elif record.state == "requested" and obs.now - record.at < OPTIMIZE_TIMEOUT:
                waiting.add((version, profile))
    return commands, actions, status, waiting


def optimization_failed(status: BlueprintStatus, command_id: str, reason: str) -> BlueprintStatus | None:
    """The status with the optimization sent as `command_id` marked failed; None if it is not one of
    this blueprint's (or is marked already)."""
    changed = False
    kept = []
    for record in status.optimizations:
        if record.command_id == command_id and record.state != "failed":
            record = _with(record, state="failed", reason=reason[:2000])
            changed = True
        kept.append(record)
    return _with(status, optimizations=kept) if changed else None


# --- rollouts --------------------------------------------------------------------------------


def rollout_id_for(stored: StoredBlueprint, version: str, group: str, devices: Sequence[str]) -> str:
    """`bp-<16 hex>`: the same application of a blueprint (name, generation and when it was applied:
    a blueprint deleted and applied again starts afresh), version, group and devices, the same rollout."""
    parts = [stored.blueprint.name, str(stored.generation), stored.applied_at.isoformat(), version, group, *devices]
    return f"bp-{deterministic_id(*parts)[:16]}"


_NO_BASELINE = ", without its baseline comparisons: these devices ran no model before"


def _compares(policy: RolloutPolicy) -> bool:
    return any(g.compare_to_baseline is not None for g in policy.gates)


def start_command(
    blueprint: Blueprint, group: _Group, rollout_id: str, devices: Sequence[str], *, first_install: bool = False
) -> StartRollout:
    """The rollout of `devices` to the group's version with the group's policy (a pin: one ungated wave).

    `first_install`: none of the devices was ever told to run a model, so a gate comparing them with
    the devices still on the previous model has nothing to compare with and could only ever be
    Inconclusive (pausing a hands-off first delivery forever); those gates are left out, the
    absolute ones kept, and the action says so.
    """
    spec, policy = blueprint.spec, group.policy
    pinned = group.pinned
    gates = [g for g in policy.gates if not (first_install and g.compare_to_baseline is not None)]
    return StartRollout(
        rollout_id=rollout_id,
        model=spec.model,
        ref=group.version or "",
        selector=Selector(device_ids=list(devices)),
        waves=[Wave(percent=100)] if pinned else [Wave(percent=p) for p in policy.waves],
        gates=[] if pinned else gates,
        install_threshold=policy.install_threshold,
        soak_seconds=0 if pinned else policy.soak,
        max_download_starts_per_second=policy.max_download_rate,
        config=group.config,
        profiles=dict(spec.profiles),
    )


def _window(
    obs: Observations, group: _Group, active: Sequence[StartedRollout], status: BlueprintStatus
) -> tuple[list[tuple[Message, str]], list[ReconcileAction], BlueprintStatus]:
    """Pause the group's running rollouts outside its window, resume those the controller paused inside."""
    window = group.policy.maintenance_window
    if window is None:
        return [], [], status
    inside = in_window(window, obs.now)
    commands: list[tuple[Message, str]] = []
    actions: list[ReconcileAction] = []
    for started in active:
        record = obs.rollouts.get(started.rollout_id)
        if record is None:
            continue
        if started.paused_for_window and record.state != "paused":  # resumed by an operator meanwhile
            started = _with(started, paused_for_window=False)
            status = _update_rollout(status, started)
        if not inside and record.state in ("pending", "installing", "soaking") and not started.paused_for_window:
            commands.append(_pause(started, obs.now))
            actions.append(_window_action("pause_rollout", started, f"outside {_window_text(window)}"))
            status = _update_rollout(status, _with(started, paused_for_window=True))
        elif inside and record.state == "paused" and started.paused_for_window:
            commands.append(_resume(started, obs.now))
            actions.append(_window_action("resume_rollout", started, f"inside {_window_text(window)}"))
            status = _update_rollout(status, _with(started, paused_for_window=False))
    return commands, actions, status


def _stale_pauses(
    obs: Observations, status: BlueprintStatus
) -> tuple[list[tuple[Message, str]], list[ReconcileAction], BlueprintStatus]:
    """Resume what the controller paused for a window under an earlier generation of the blueprint:
    the current one's groups decide about their own rollouts, and nobody else would ever resume it."""
    commands: list[tuple[Message, str]] = []
    actions: list[ReconcileAction] = []
    for started in status.rollouts:
        record = obs.rollouts.get(started.rollout_id)
        stale = started.generation != obs.stored.generation and started.paused_for_window
        if stale and record is not None and record.state == "paused":
            commands.append(_resume(started, obs.now))
            actions.append(_window_action("resume_rollout", started, "the blueprint changed since it paused it"))
            status = _update_rollout(status, _with(started, paused_for_window=False))
    return commands, actions, status


def _pause(started: StartedRollout, now: datetime) -> tuple[Message, str]:
    command = PauseRollout(rollout_id=started.rollout_id, reason="outside the maintenance window")
    return command, deterministic_id("blueprint-pause", started.rollout_id, now.date().isoformat())


def _resume(started: StartedRollout, now: datetime) -> tuple[Message, str]:
    return ResumeRollout(rollout_id=started.rollout_id), deterministic_id(
        "blueprint-resume", started.rollout_id, now.date().isoformat()
    )


def _window_action(kind: ActionKind, started: StartedRollout, why: str) -> ReconcileAction:
    verb = "pause" if kind == "pause_rollout" else "resume"
    return ReconcileAction(
        kind=kind,
        detail=f"{started.group}: {verb} rollout {started.rollout_id} ({why})",
        version=started.version,
        rollout_id=started.rollout_id,
        group=started.group,
    )


def in_window(window: MaintenanceWindow, now: datetime) -> bool:
    """Whether `now` falls in the daily window, in its time zone (a window may cross midnight)."""
    local = now.astimezone(ZoneInfo(window.timezone)).time()
    start, end = _clock(window.start), _clock(window.end)
    if start < end:
        return start <= local < end
    return local >= start or local < end


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _window_text(window: MaintenanceWindow) -> str:
    return f"{window.start}-{window.end} {window.timezone}"


# --- promotion -------------------------------------------------------------------------------


def _promotion(
    obs: Observations, status: BlueprintStatus, pending: int
) -> tuple[list[tuple[Message, str]], list[ReconcileAction], BlueprintStatus]:
    spec = obs.stored.blueprint.spec
    promote, tracked = spec.promote, obs.tracked
    if promote is None or tracked is None or pending:
        return [], [], status
    version = tracked.version.version
    completed = any(r.version == version and r.state == "completed" for r in status.rollouts)
    if not completed or version in status.promoted:
        return [], [], status
    if promote.to in tracked.aliases:  # moved already (by hand, or before a restart): nothing to send
        return [], [], _with(status, promoted=[*status.promoted, version][-MAX_ROLLOUTS_KEPT:])
    command = SetAlias(name=spec.model, alias=promote.to, version=version)
    action = ReconcileAction(
        kind="promote", detail=f"move {spec.model} alias {promote.to} to {version}", version=version
    )
    status = _with(status, promoted=[*status.promoted, version][-MAX_ROLLOUTS_KEPT:])
    return (
        [(command, deterministic_id("blueprint-promote", obs.stored.blueprint.name, spec.model, version))],
        [action],
        status,
    )


# --- status ----------------------------------------------------------------------------------


def _fresh_status(obs: Observations) -> BlueprintStatus:
    """The remembered status with each started rollout's state as observed now."""
    name, generation = obs.stored.blueprint.name, obs.stored.generation
    if obs.status is None:
        return BlueprintStatus(name=name, generation=generation, updated_at=obs.now)
    rollouts = []
    for started in obs.status.rollouts:
        record = obs.rollouts.get(started.rollout_id)
        if record is not None and started.state != "refused":
            started = _with(started, state=record.state, reason=record.reason)
        rollouts.append(started)
    return _with(obs.status, generation=generation, rollouts=rollouts)


def _remember_rollout(status: BlueprintStatus, started: StartedRollout) -> BlueprintStatus:
    return _with(status, rollouts=[*status.rollouts, started][-MAX_ROLLOUTS_KEPT:])


def _update_rollout(status: BlueprintStatus, started: StartedRollout) -> BlueprintStatus:
    return _with(status, rollouts=[started if r.rollout_id == started.rollout_id else r for r in status.rollouts])


def rollout_refused(status: BlueprintStatus, rollout_id: str, reason: str) -> BlueprintStatus:
    """The status with a started rollout marked refused by the rollout service, with its reason."""
    return _with(
        status,
        rollouts=[
            _with(r, state="refused", reason=reason[:2000]) if r.rollout_id == rollout_id else r
            for r in status.rollouts
        ],
    )


def _with(model: M, **changes: object) -> M:
    """A copy of a frozen model with some fields changed (the changes are this module's own, typed above)."""
    return model.model_copy(update=changes)


def _replace_optimization(status: BlueprintStatus, record: OptimizationRecord) -> BlueprintStatus:
    same = (record.version, record.profile)
    return _with(status, optimizations=[record if (o.version, o.profile) == same else o for o in status.optimizations])


def _remember_optimization(status: BlueprintStatus, record: OptimizationRecord) -> BlueprintStatus:
    return _with(status, optimizations=[*status.optimizations, record][-MAX_OPTIMIZATIONS_KEPT:])


def _summary(actions: Sequence[ReconcileAction], notes: Sequence[str], *, converged: int, obs: Observations) -> str:
    parts = [a.detail for a in actions] + list(notes)
    if not parts:
        version = obs.tracked.version.version if obs.tracked else "?"
        if not obs.owned:
            return "selects no device"
        return f"converged: {converged} devices as the blueprint says ({obs.stored.blueprint.spec.model} {version})"
    text = "; ".join(parts)
    return text if len(text) <= 2000 else text[:1997] + "..."
