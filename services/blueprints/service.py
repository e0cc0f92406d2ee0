"""The blueprints service's use cases: apply, diff, show and delete blueprints, and the controller
loop that makes the fleet what they say.

Apply is all or nothing as far as checks go: every blueprint is checked against what the platform
knows (profiles from the optimizer, device classes from the profiles and the inventory, models from
the registry), each must select a device, and no device may be tied between blueprints, before any
is stored. Each write is compare-and-set on the revision read (KV has no multi-key transaction), so
an apply racing another on the same blueprint stops at the conflict and says which of its
blueprints were stored before it: applying the file again converges.

The loop is level-triggered (`reconcile.py`): every pass observes the inventory, the desired states,
the rollouts and the registry, decides per blueprint, sends the commands, then saves the status it
decided with the revision it read. A crash between sending and saving repeats the same commands
with the same ids on the next pass, which JetStream and the receiving services de-duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from services.blueprints import reconcile
from services.blueprints.diff import DiffGroup, Running, diff
from services.blueprints.errors import InvalidBlueprint, Problem
from services.blueprints.load import Catalogue, check_against
from services.blueprints.metrics import BlueprintMetrics
from services.blueprints.ownership import Ownership, require_no_ties, resolve_owners
from services.blueprints.ports import Announcer, BlueprintStore, CommandSender, Fleet, Optimizer, Registry
from shared.errors import Conflict, NotFound, TransientError
from shared.messages.blueprint import Blueprint
from shared.messages.blueprint_api import (
    MAX_GROUP_DEVICES_SHOWN,
    MAX_GROUPS,
    MAX_LOST_SHOWN,
    AppliedBlueprint,
    ApplyBlueprints,
    ApplyResult,
    BlueprintApplied,
    BlueprintDetail,
    BlueprintStatus,
    BlueprintSummary,
    DeleteBlueprint,
    DeviceGroupChange,
    GetBlueprint,
    ListBlueprints,
    RunningArtifact,
    StoredBlueprint,
    TargetArtifact,
)
from shared.messages.device import DesiredState
from shared.messages.envelope import deterministic_id
from shared.messages.inventory import DeviceRecord
from shared.messages.optimizer import OptimizationFailed, OptimizeModel
from shared.messages.registry import ModelDetail
from shared.messages.rollout import BASE_VARIANT, StartRollout
from shared.messages.rollout_record import RolloutRecord
from shared.outcomes import Outcome

log = logging.getLogger("slmops.blueprints")
MIN_PASS_INTERVAL = 1.0  # seconds between two passes, however often the fleet changes


class BlueprintService:
    def __init__(
        self,
        *,
        store: BlueprintStore,
        fleet: Fleet,
        registry: Registry,
        optimizer: Optimizer,
        commands: CommandSender,
        announcer: Announcer,
        metrics: BlueprintMetrics | None = None,
    ) -> None:
        self._store = store
        self._fleet = fleet
        self._registry = registry
        self._optimizer = optimizer
        self._commands = commands
        self._announcer = announcer
        self.metrics = metrics or BlueprintMetrics()
        self._loop: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one pass at a time; applies wait for it, so a pass sees a whole apply

    # --- requests ------------------------------------------------------------------------------

    async def apply(self, request: ApplyBlueprints) -> ApplyResult:
        """Store the blueprints (or with `dry_run`, say what would change); all or nothing."""
        source = request.source or "<request>"
        _require_unique_names(request.blueprints, source)
        # A diff may name a model not pushed yet (what would this file do once it is?); apply may not.
        catalogue = await self._catalogue(check_models=not request.dry_run)
        problems = [
            Problem(document=n, blueprint=b.name, path=path, reason=reason)
            for n, b in enumerate(request.blueprints, start=1)
            for path, reason in check_against(b, catalogue)
        ]
        async with self._lock:
            stored = await self._store.specs()
            devices = list((await self._fleet.devices()).values())
            after = {name: s.blueprint for name, (s, _) in stored.items()} | {b.name: b for b in request.blueprints}
            ownership = resolve_owners(list(after.values()), devices)
            for n, b in enumerate(request.blueprints, start=1):
                if b.name in ownership.unmatched:
                    problems.append(
                        Problem(
                            document=n,
                            blueprint=b.name,
                            path="spec.selector",
                            reason=f"selects no device of the {len(devices)} in the inventory",
                        )
                    )
            if problems:
                raise InvalidBlueprint(source, problems)
            require_no_ties(ownership)
            groups = await self._diff([s.blueprint for s, _ in stored.values()], list(after.values()), devices)
            now = datetime.now(UTC)
            applied = []
            for blueprint in request.blueprints:
                current = stored.get(blueprint.name)
                digest = blueprint_digest(blueprint)
                if current is not None and current[0].digest == digest:
                    applied.append(
                        AppliedBlueprint(name=blueprint.name, action="unchanged", generation=current[0].generation)
                    )
                    continue
                generation = current[0].generation + 1 if current else 1
                action = "configured" if current else "created"
                applied.append(AppliedBlueprint(name=blueprint.name, action=action, generation=generation))
                if request.dry_run:
                    continue
                record = StoredBlueprint(blueprint=blueprint, generation=generation, digest=digest, applied_at=now)
                try:
                    await self._store.put_spec(record, current[1] if current else None)
                except Conflict:
                    done = [a.name for a in applied[:-1] if a.action != "unchanged"]
                    raise Conflict(
                        f"blueprint {blueprint.name!r} changed while this apply ran (another apply?); "
                        f"stored before it: {', '.join(done) or 'none'}; nothing after it: apply again"
                    ) from None
                event = BlueprintApplied(name=blueprint.name, action=action, generation=generation, digest=digest)
                event_id = deterministic_id("blueprint-applied", blueprint.name, digest, now.isoformat())
                await self._announcer.event(event, event_id)
        if not request.dry_run:
            self._wake.set()
        return ApplyResult(
            dry_run=request.dry_run,
            blueprints=applied,
            groups=[_group_change(g) for g in groups[:MAX_GROUPS]],
            groups_omitted=max(0, len(groups) - MAX_GROUPS),
        )

    async def delete(self, request: DeleteBlueprint) -> AppliedBlueprint:
        async with self._lock:
            stored = (await self._store.specs()).get(request.name)
            if stored is None:
                raise NotFound(f"no blueprint {request.name!r}; `slmops blueprint list` shows them")
            await self._store.delete_spec(request.name, stored[1])
            await self._store.delete_status(request.name)
        self.metrics.forget(request.name)
        event = BlueprintApplied(name=request.name, action="deleted", generation=0)
        event_id = deterministic_id("blueprint-deleted", request.name, stored[0].applied_at.isoformat())
        await self._announcer.event(event, event_id)
        return AppliedBlueprint(name=request.name, action="deleted", generation=0)

    async def summaries(self, request: ListBlueprints) -> list[BlueprintSummary]:
        stored = await self._store.specs()
        ownership = resolve_owners([s.blueprint for s, _ in stored.values()], (await self._fleet.devices()).values())
        out = []
        for name, (record, _) in sorted(stored.items()):
            status = await self._store.status(name)
            spec = record.blueprint.spec
            out.append(
                BlueprintSummary(
                    name=name,
                    model=spec.model,
                    track=spec.track,
                    priority=spec.priority,
                    generation=record.generation,
                    devices=len(ownership.devices_of(name)),
                    lost=len(ownership.lost.get(name, {})),
                    summary=status[0].summary if status else "not reconciled yet",
                    applied_at=record.applied_at,
                )
            )
        return out

    async def detail(self, request: GetBlueprint) -> BlueprintDetail:
        stored = await self._store.specs()
        if request.name not in stored:
            raise NotFound(f"no blueprint {request.name!r}; `slmops blueprint list` shows them")
        blueprints = [s.blueprint for s, _ in stored.values()]
        devices = list((await self._fleet.devices()).values())
        ownership = resolve_owners(blueprints, devices)
        lost = ownership.lost.get(request.name, {})
        groups = []
        if request.groups:
            groups = [
                g
                for g in await self._diff(blueprints, blueprints, devices, ties_ok=True)
                if g.blueprint == request.name
            ]
        status = await self._store.status(request.name)
        return BlueprintDetail(
            stored=stored[request.name][0],
            devices=len(ownership.devices_of(request.name)),
            lost=dict(list(lost.items())[:MAX_LOST_SHOWN]),
            lost_count=len(lost),
            groups=[_group_change(g) for g in groups[:MAX_GROUPS]],
            status=status[0] if status else None,
        )

    # --- events --------------------------------------------------------------------------------

    async def on_optimization_failed(self, event: OptimizationFailed, *, event_id: str) -> Outcome:
        """Remember that a build a blueprint asked for failed, so its rollout goes on without it.

        Under the pass lock, so it never races a pass's own status write; a conflict with another
        replica is transient (the event is redelivered), never a reason to drop it.
        """
        changed = False
        async with self._lock:
            for name in await self._store.specs():
                found = await self._store.status(name)
                if found is None:
                    continue
                updated = reconcile.optimization_failed(found[0], event.optimization_id, event.reason)
                if updated is None:
                    continue
                try:
                    await self._store.put_status(updated, found[1])
                except Conflict:
                    raise TransientError(f"blueprint {name}'s status moved; the event is handled again") from None
                changed = True
        if changed:
            self._wake.set()
        return Outcome(status="applied" if changed else "unchanged")

    # --- the loop ------------------------------------------------------------------------------

    def run_in_background(self, every: float) -> None:
        async def loop() -> None:
            while True:
                try:
                    await self.reconcile_all()
                    self.metrics.passes.inc()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.metrics.failed_passes.inc()
                    log.exception("reconcile pass failed; trying again next tick")
                # Woken by any change of the fleet (a heartbeat is one), a pass would otherwise run back to
                # back for as long as 10,000 devices report; a change waits at most this long.
                await asyncio.sleep(min(every, MIN_PASS_INTERVAL))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=every)
                self._wake.clear()

        self._loop = asyncio.create_task(loop(), name="blueprints-reconcile")

    def wake(self) -> None:
        """Look again now (a rollout or device changed)."""
        self._wake.set()

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop

    async def reconcile_all(self, now: datetime | None = None) -> list[reconcile.Decision]:
        """One pass over every stored blueprint; the decisions it acted on. A blueprint whose pass
        fails (its model's registry call timed out, say) is logged and left for the next pass: it
        never holds up the others."""
        async with self._lock:
            stored = await self._store.specs()
            if not stored:
                return []
            devices = await self._fleet.devices()
            desired = await self._fleet.desired()
            rollouts = await self._fleet.rollouts()
            ownership = resolve_owners([s.blueprint for s, _ in stored.values()], devices.values())
            decisions = []
            for name, (record, _revision) in sorted(stored.items()):
                try:
                    decision = await self._reconcile_one(record, ownership, devices, desired, rollouts, now)
                except Exception:  # noqa: BLE001 - one blueprint's failure is logged, the rest go on
                    self.metrics.failed_passes.inc()
                    log.exception(
                        "reconciling a blueprint failed; the next pass tries again", extra={"blueprint": name}
                    )
                    continue
                if decision is not None:
                    decisions.append(decision)
            return decisions

    async def _reconcile_one(
        self,
        record: StoredBlueprint,
        ownership: Ownership,
        devices: Mapping[str, DeviceRecord],
        desired: Mapping[str, DesiredState],
        rollouts: Mapping[str, RolloutRecord],
        now: datetime | None,
    ) -> reconcile.Decision | None:
        """Observe, decide, save what was decided, then act: the status (what the controller asked
        for) is written before any command goes out, so a crash or a conflict in between repeats the
        same commands with the same ids (de-duplicated), never loses what was sent. A status that
        moved meanwhile (another replica) means deciding again from it, next pass."""
        spec, name = record.blueprint.spec, record.blueprint.name
        found = await self._store.status(name)
        status, revision = (found[0], found[1]) if found else (None, None)
        pins = {o.pin for o in spec.overrides if o.pin is not None}
        tracked = await self._registry.get_model(spec.model, spec.track)
        latest = await self._registry.get_model(spec.model, "latest")
        obs = reconcile.Observations(
            now=now or datetime.now(UTC),
            stored=record,
            status=status,
            owned={d: o for d, o in ownership.owners.items() if o.blueprint.name == name},
            devices=devices,
            desired=desired,
            rollouts=rollouts,
            tracked=tracked,
            latest=latest,
            pinned={p: d for p in pins if (d := await self._registry.get_model(spec.model, p)) is not None},
        )
        decision = reconcile.decide(obs)
        new_status = decision.status
        if status is None or _without_clock(new_status) != _without_clock(status):
            try:
                revision = await self._store.put_status(new_status, revision)
            except Conflict:
                log.info("status moved during the pass; the next pass decides again", extra={"blueprint": name})
                return None
        refusals = 0
        for command, command_id in decision.commands:
            refused = await self._commands.send(command, command_id, wait=not isinstance(command, OptimizeModel))
            if refused is not None and isinstance(command, StartRollout) and command.rollout_id:
                log.warning("rollout refused", extra={"blueprint": name, "reason": refused})
                new_status = reconcile.rollout_refused(new_status, command.rollout_id, refused)
                refusals += 1
        if refusals:
            with contextlib.suppress(Conflict):  # the refusal is also in the rollout's history; next pass sees
                await self._store.put_status(new_status, revision)
        self.metrics.reconciled(new_status, decision.event.actions if decision.event else (), refused=refusals)
        if decision.event is not None:
            event = decision.event
            event_id = deterministic_id(
                "blueprint-reconciled", name, record.applied_at.isoformat(), str(revision or 0), event.summary
            )
            await self._announcer.event(event, event_id)
            log.info("reconciled", extra={"blueprint": name, "summary": event.summary})
        return decision

    # --- helpers -------------------------------------------------------------------------------

    async def _catalogue(self, *, check_models: bool) -> Catalogue:
        profiles = await self._optimizer.profiles()
        devices = await self._fleet.devices()
        return Catalogue(
            device_classes=frozenset(profiles.values()) | {d.device_class for d in devices.values()},
            profiles=profiles,
            models=await self._registry.models() if check_models else None,
            gate_metrics=None,  # Gate itself refuses an unknown metric, in the file and on the bus
        )

    async def _diff(
        self,
        before: Sequence[Blueprint],
        after: Sequence[Blueprint],
        devices: list[DeviceRecord],
        *,
        ties_ok: bool = False,
    ) -> list[DiffGroup]:
        desired = await self._fleet.desired()
        running = await self._running(devices, desired)
        aliases: dict[str, dict[str, str]] = {}
        for blueprint in [*before, *after]:
            spec = blueprint.spec
            if spec.track in aliases.get(spec.model, {}):
                continue
            detail = await self._registry.get_model(spec.model, spec.track)
            if detail is not None:
                aliases.setdefault(spec.model, {})[spec.track] = detail.version.version
        if ties_ok:
            owners = resolve_owners(after, devices)
            devices = [
                d
                for d in devices
                if d.device_id in owners.owners or not any(d.device_id in t.devices for t in owners.ties)
            ]
        return diff(before, after, devices, running=running, aliases=aliases)

    async def _running(
        self, devices: Iterable[DeviceRecord], desired: Mapping[str, DesiredState]
    ) -> dict[str, Running]:
        """What each device serves: its desired state's artifact, when the device reports serving it."""
        details: dict[tuple[str, str], ModelDetail | None] = {}
        out = {}
        for device in devices:
            wanted = desired.get(device.device_id)
            if wanted is None or device.active_digest != wanted.digest:
                continue
            key = (wanted.model, wanted.version)
            if key not in details:
                details[key] = await self._registry.get_model(*key)
            detail = details[key]
            profile = None
            if detail is not None and wanted.variant:
                variant = next((v for v in detail.variants if v.variant == wanted.variant), None)
                profile = variant.profile if variant else None
            out[device.device_id] = Running(
                model=wanted.model, version=wanted.version, variant=wanted.variant or BASE_VARIANT, profile=profile
            )
        return out


def _without_clock(status: BlueprintStatus) -> BlueprintStatus:
    """A status compared with another without its time: a pass that changed nothing writes nothing."""
    return status.model_copy(update={"updated_at": datetime.min.replace(tzinfo=UTC)})


def blueprint_digest(blueprint: Blueprint) -> str:
    """sha256 of the document as canonical JSON: equal files, equal digests (apply twice = no change)."""
    body = json.dumps(blueprint.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def _require_unique_names(blueprints: Sequence[Blueprint], source: str) -> None:
    seen: dict[str, int] = {}
    problems = []
    for n, blueprint in enumerate(blueprints, start=1):
        if blueprint.name in seen:
            problems.append(
                Problem(
                    document=n,
                    blueprint=blueprint.name,
                    path="metadata.name",
                    reason=f"document {seen[blueprint.name]} has this name too; a name is one blueprint",
                )
            )
        seen.setdefault(blueprint.name, n)
    if problems:
        raise InvalidBlueprint(source, problems)


def _group_change(group: DiffGroup) -> DeviceGroupChange:
    before = group.before
    after = group.after
    return DeviceGroupChange(
        blueprint=group.blueprint,
        override=group.override,
        device_class=group.device_class,
        before=RunningArtifact(
            model=before.model, version=before.version, variant=before.variant, profile=before.profile
        )
        if before
        else None,
        after=TargetArtifact(model=after.model, version=after.version, profile=after.profile, settings=after.settings)
        if after
        else None,
        reason=group.reason,
        count=len(group.devices),
        devices=list(group.devices[:MAX_GROUP_DEVICES_SHOWN]),
    )
