"""The rollout service's use cases: start a rollout, steer it, reconcile it, keep the inventory.

`reconcile` is the loop's body (STYLE.md): load the record with its revision, observe (the planned
devices' desired states, saved previous states and statuses; the current wave's reporting devices;
the gates now due), `decide`, apply the actions in order, save the record with compare-and-set. A
conflict anywhere means another replica or a device moved first: observe and decide again. Applying
is idempotent by construction (see `decide`), so a crash at any point only repeats harmless work.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

from services.rollout import inventory, planning
from services.rollout.decide import (
    TERMINAL,
    Command,
    Decision,
    DeviceView,
    GateKey,
    Observations,
    Publish,
    RevertDesired,
    SavePrevious,
    WriteDesired,
    decide,
    gate_keys,
    wave_gates,
    wave_soak,
    wave_traceparent,
)
from services.rollout.ports import (
    Announcer,
    DesiredStore,
    DeviceStore,
    Registry,
    RevisionConflict,
    RolloutStore,
    Telemetry,
)
from shared.errors import Conflict, InvalidRequest, NotFound
from shared.messages.device import DeviceHello, DeviceStatus, SmokeInput
from shared.messages.envelope import Message, deterministic_id
from shared.messages.registry import ModelDetail
from shared.messages.rollout import (
    AbortRollout,
    PauseRollout,
    ResumeRollout,
    RollbackRollout,
    RolloutStarted,
    StartRollout,
    WavePlan,
)
from shared.messages.rollout_record import (
    MAX_EXCLUDED_SHOWN,
    ArtifactChoice,
    DeviceGroup,
    RolloutRecord,
    WaveRecord,
)
from shared.messages.telemetry import EvaluateGate, GateEvaluation
from shared.outcomes import Outcome
from shared.topology import RECORD_MAX_BYTES
from shared.tracing import (
    context_of,
    current_traceparent,
    derived_span_id,
    derived_trace_id,
    parse_traceparent,
    record_finished,
    traceparent,
)

log = logging.getLogger("slmops.rollout")
TRACER = "slmops.rollout"
_tracer = trace.get_tracer(TRACER)

MAX_ATTEMPTS = 20  # compare-and-set conflicts in a row before giving up for this pass
# The baseline's windows are read from this long before the wave started: a window is placed by its
# start, and the ones open when the wave started (10 s for the agent, 30 s for the simulator) count.
BASELINE_LOOKBACK = timedelta(seconds=60)
SLOW_PASS_SECONDS = 1.0  # a pass this long is logged with its parts
IMMEDIATE_PASSES = 3
MIN_PASS_GAP_SECONDS = 0.05  # reconciles of one rollout in a row while its decision asks for "now"
WRITE_PIPELINE = 500  # devices whose previous states are saved, then desired states written, at a time


class RolloutRefused(InvalidRequest):
    """A rollout that cannot start as asked (nothing selected, nothing runnable, overlapping)."""


class RolloutService:
    def __init__(
        self,
        *,
        rollouts: RolloutStore,
        desired: DesiredStore,
        devices: DeviceStore,
        registry: Registry,
        telemetry: Telemetry,
        announcer: Announcer,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._rollouts = rollouts
        self._desired = desired
        self._devices = devices
        self._registry = registry
        self._telemetry = telemetry
        self._announcer = announcer
        self._clock = clock
        self.statuses_ignored = 0  # statuses from devices not heard from yet (no hello to attach them to)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # --- the loop -----------------------------------------------------------------------------

    def run_in_background(self, every: float) -> None:
        """Reconcile every active rollout every `every` seconds, and at once after a command."""

        async def loop() -> None:
            clock = asyncio.get_running_loop().time
            while True:
                wait, started = every, clock()
                try:
                    decisions = await self.reconcile_all()
                    wakes = [d.wake_at for d in decisions if d.wake_at is not None]
                    if wakes:
                        wait = min(every, max(0.0, (min(wakes) - self._clock()).total_seconds()))
                except Exception:  # noqa: BLE001 - a failed pass (an outage) is logged; the next one retries
                    log.exception("reconcile pass failed")
                # Statuses arrive in a stream of batches, each a wake-up: passes over a large wave
                # take at most a third of the time, however fast the batches come.
                gap = min(wait, max(MIN_PASS_GAP_SECONDS, 2 * (clock() - started)))
                await asyncio.sleep(gap)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, wait - gap))
                self._wake.clear()

        self._task = asyncio.create_task(loop(), name="rollout-reconcile")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # --- handlers (the kit's commands and device reports) -------------------------------------

    async def on_start(self, cmd: StartRollout, *, command_id: str) -> Outcome:
        outcome = await self.start(cmd, command_id=command_id)
        self._wake.set()
        return outcome

    async def on_pause(self, cmd: PauseRollout, *, command_id: str) -> Outcome:
        return await self.command(cmd.rollout_id, "pause", reason=cmd.reason)

    async def on_resume(self, cmd: ResumeRollout, *, command_id: str) -> Outcome:
        return await self.command(cmd.rollout_id, "resume", reason=cmd.reason)

    async def on_abort(self, cmd: AbortRollout, *, command_id: str) -> Outcome:
        return await self.command(cmd.rollout_id, "abort", reason=cmd.reason)

    async def on_rollback(self, cmd: RollbackRollout, *, command_id: str) -> Outcome:
        return await self.command(cmd.rollout_id, "rollback", reason=cmd.reason)

    async def reports(self, reports: Sequence[tuple[Message, datetime]]) -> None:
        """Fold a batch of hellos and statuses (each with its envelope time) into the inventory: one
        read and one compare-and-set write per device, the devices concurrently."""
        by_device: dict[str, list[tuple[DeviceHello | DeviceStatus, datetime]]] = {}
        for report, at in reports:
            if isinstance(report, DeviceHello | DeviceStatus):
                by_device.setdefault(report.device_id, []).append((report, at))
        await asyncio.gather(*(self._fold(device_id, folded) for device_id, folded in by_device.items()))
        if any(isinstance(r, DeviceStatus) for r, _ in reports):
            self._wake.set()  # an install step may complete a wave

    # --- starting -----------------------------------------------------------------------------

    async def start(self, cmd: StartRollout, *, command_id: str) -> Outcome:
        """Plan and store a rollout; it runs on the next reconcile.

        Raises:
            NotFound: the model, version or alias does not exist.
            RolloutRefused: it would select no device, no selected device can run the version, the
                plan does not fit a record, or it touches devices of an active rollout.
        """
        rollout_id = cmd.rollout_id or f"ro-{command_id[:16]}"
        existing = await self._rollouts.get(rollout_id)
        if existing is not None:
            record, _ = existing
            return Outcome(status="unchanged", events=[_started(record)], result={"rollout_id": rollout_id})
        detail = await self._registry.get_model(cmd.model, cmd.ref)
        fleet = await self._devices.all()
        try:
            planned = planning.plan_start(cmd, detail, fleet, rollout_id=rollout_id)
        except planning.UnknownVariant as exc:
            raise RolloutRefused(str(exc)) from None
        if not planned.targets:
            ids = cmd.selector.device_ids
            why = (
                (
                    f"no device {', '.join(ids[:3])}{' ...' if len(ids) > 3 else ''} in the inventory "
                    "(a device joins it with its first hello)"
                    if ids and not any(d.device_id in ids for d in fleet)
                    else "the selector selects no device"
                )
                if not planned.excluded
                else f"none of the {len(planned.excluded)} selected devices can run {cmd.model} "
                f"{detail.version.version}: {planned.excluded[0].device_id}: {planned.excluded[0].reason}"
            )
            raise RolloutRefused(why)
        await self._refuse_overlap(rollout_id, {t.device_id for t in planned.targets})
        now = self._clock()
        smoke = _smoke_input(detail) if cmd.smoke_test else None
        record = _record(rollout_id, cmd, detail.version.version, planned, now, smoke)
        record = record.model_copy(update=_trace_of(rollout_id, current_traceparent()))
        if len(record.model_dump_json().encode()) > RECORD_MAX_BYTES:
            raise RolloutRefused(
                f"the plan of {len(planned.targets)} devices does not fit a rollout record "
                f"({RECORD_MAX_BYTES // 1024} KiB); split the fleet with selectors"
            )
        if await self._rollouts.create(record) is None:
            raced = await self._rollouts.get(rollout_id)
            assert raced is not None
            record = raced[0]
        log.info("rollout planned", extra={"rollout_id": rollout_id, "devices": len(planned.targets)})
        return Outcome(status="applied", events=[_started(record)], result={"rollout_id": rollout_id})

    async def _refuse_overlap(self, rollout_id: str, devices: set[str]) -> None:
        for other in await self._rollouts.list():
            if other.rollout_id == rollout_id or other.state in TERMINAL:
                continue
            shared = devices & {d for w in other.waves for d in w.devices}
            if shared:
                example = sorted(shared)[0]
                raise RolloutRefused(
                    f"{len(shared)} of its devices (e.g. {example}) are in active rollout {other.rollout_id} "
                    f"({other.state}); abort or finish it first"
                )

    # --- steering and reconciling -------------------------------------------------------------

    async def command(self, rollout_id: str, command: Command, *, reason: str | None = None) -> Outcome:
        """Apply pause, resume, abort or rollback now (a reconcile with the command observed)."""
        decision = await self.reconcile(rollout_id, command=command, reason=reason)
        if decision is None:
            raise NotFound(f"no rollout {rollout_id!r}")
        return Outcome(status="applied", result={"rollout_id": rollout_id, "state": decision.record.state})

    async def reconcile(
        self, rollout_id: str, *, command: Command | None = None, reason: str | None = None
    ) -> Decision | None:
        """One pass of the loop for one rollout; the decision applied (None: no such rollout)."""
        for _ in range(MAX_ATTEMPTS):
            loaded = await self._rollouts.get(rollout_id)
            if loaded is None:
                return None
            record, revision = loaded
            if record.state in TERMINAL and command != "rollback":
                return Decision(record=record)
            timer = _PassTimer()
            obs = await self._observe(record, command=command, reason=reason)
            timer.lap("observe")
            decision = decide(record, obs)
            timer.lap("decide")
            try:
                await self._apply(record, decision)
                timer.lap("apply")
                if decision.record != record:
                    await self._rollouts.update(decision.record, revision)
                timer.lap("save")
            except RevisionConflict as exc:
                log.info("reconcile raced; again", extra={"rollout_id": rollout_id, "key": exc.key})
                continue
            for span in decision.spans:
                record_finished(span, tracer_name=TRACER)
            timer.report(record, decision)
            return decision
        log.warning("reconcile kept racing; next pass", extra={"rollout_id": rollout_id})
        return None

    async def reconcile_all(self) -> list[Decision]:
        """A pass over every rollout that is not over; one that asks to be looked at again at once
        (a soak of 0 s: its gates are due) is, up to `IMMEDIATE_PASSES` times."""
        done = []
        for record in await self._rollouts.list():
            if record.state in TERMINAL:
                continue
            for _ in range(IMMEDIATE_PASSES):
                decision = await self.reconcile(record.rollout_id)
                if decision is None or decision.wake_at is None or decision.wake_at > self._clock():
                    break
            if decision is not None:
                done.append(decision)
        return done

    async def _observe(self, record: RolloutRecord, *, command: Command | None, reason: str | None) -> Observations:
        # The current wave and the next (a decision may start it and write its first devices);
        # every wave so far when reverting them.
        reverting = record.state == "rolling_back" or command == "rollback"
        waves = record.waves[: record.wave + 1] if reverting else record.waves[record.wave : record.wave + 2]
        planned = [d for w in waves for d in w.devices]
        desired = await self._desired.get_many(planned)
        previous = await self._rollouts.previous(record.rollout_id, planned)
        statuses = await self._devices.get_many(planned)
        wave = record.waves[record.wave]
        reported: set[str] = set()
        if record.state in ("installing", "soaking") and wave.started_at is not None:
            reported = await self._telemetry.reporters(
                rollout_id=record.rollout_id, wave=wave.index, digests=_digests(record, wave)
            )
        views = {
            d: DeviceView(
                desired=desired[d][0] if d in desired else None,
                revision=desired[d][1] if d in desired else None,
                previous=previous.get(d),
                previous_saved=d in previous,
                status=statuses[d].last_status if d in statuses else None,
                reported=d in reported,
            )
            for d in planned
        }
        now = self._clock()
        return Observations(
            now=now, devices=views, gates=await self._due_gates(record, now), command=command, command_reason=reason
        )

    async def _due_gates(self, record: RolloutRecord, now: datetime) -> dict[GateKey, GateEvaluation]:
        """Evaluate the current wave's gates once its soak is over (decide reads them)."""
        wave = record.waves[record.wave]
        if record.state != "soaking" or wave.installed_at is None:
            return {}
        if (now - wave.installed_at).total_seconds() < wave_soak(record, wave.index):
            return {}
        gates = wave_gates(record, wave.index)
        digests = _digests(record, wave)
        since = wave.started_at or wave.installed_at  # every window of the wave on the new model

        async def evaluate(key: GateKey) -> GateEvaluation:
            _, index, device_class = key
            request = EvaluateGate(
                rollout_id=record.rollout_id,
                wave=wave.index,
                device_class=device_class,
                digests=digests,
                baseline_digests=record.previous_digests,
                since=since,
                until=now,
                baseline_since=since - BASELINE_LOOKBACK,
                gate=gates[index],
            )
            parent = context_of(wave_traceparent(record, wave.index))
            attributes: dict[str, AttributeValue] = {"slmops.rollout_id": record.rollout_id, "slmops.wave": wave.index}
            attributes |= {"slmops.metric": gates[index].metric, "slmops.device_class": device_class or "all"}
            with _tracer.start_as_current_span("rollout.gate", context=parent, attributes=attributes) as span:
                evaluation = await self._telemetry.evaluate_gate(request)
                span.set_attribute("slmops.verdict", evaluation.verdict)
                span.set_attribute("slmops.samples", evaluation.samples)
                if evaluation.observed is not None:
                    span.set_attribute("slmops.observed", evaluation.observed)
                if evaluation.verdict == "Failed":
                    span.set_status(Status(StatusCode.ERROR, evaluation.reason[:500]))
            return evaluation

        keys = gate_keys(record)  # the wave and each class, concurrently
        return dict(zip(keys, await asyncio.gather(*(evaluate(key) for key in keys)), strict=True))

    async def _apply(self, record: RolloutRecord, decision: Decision) -> None:
        """The actions in order, each run of one kind at once (`decide` lists every save before the
        writes that need it); a run of saves followed by its writes goes out as `_save_and_write`."""
        saves: list[SavePrevious] = []
        for kind, run in itertools.groupby(decision.actions, key=type):
            actions = list(run)
            if kind is not WriteDesired and saves:
                await self._save_and_write(record, saves, [])
                saves = []
            if kind is SavePrevious:
                saves = [a for a in actions if isinstance(a, SavePrevious)]
            elif kind is WriteDesired:
                writes = [a for a in actions if isinstance(a, WriteDesired)]
                with self._span("rollout.write_desired", record, writes[0].desired.traceparent, len(writes)):
                    await self._save_and_write(record, saves, writes)
                saves = []
            elif kind is RevertDesired:
                with self._span("rollout.revert_desired", record, record.traceparent, len(actions)):
                    await self._revert([a for a in actions if isinstance(a, RevertDesired)])
            else:
                for action in actions:
                    assert isinstance(action, Publish)
                    await self._announcer.event(action.event, action.event_id)
        if saves:
            await self._save_and_write(record, saves, [])

    async def _save_and_write(
        self, record: RolloutRecord, saves: list[SavePrevious], writes: list[WriteDesired]
    ) -> None:
        """Save the devices' previous states, then write their desired states, `WRITE_PIPELINE` devices
        at a time, the next chunk's save in flight while this chunk is written: each device's save is
        durable before its write, and a wave's first write does not wait for all of its saves (for
        5,000 devices, ten entries of 500 states each), which is a wave transition's time."""
        rollout_id = record.rollout_id
        previous = {a.device_id: a.previous for a in saves}
        written = {a.device_id for a in writes}
        alone = [(a.device_id, a.previous) for a in saves if a.device_id not in written]
        if alone:
            await self._rollouts.save_previous_many(rollout_id, alone)
        chunks = [writes[i : i + WRITE_PIPELINE] for i in range(0, len(writes), WRITE_PIPELINE)]

        def save(chunk: list[WriteDesired]) -> asyncio.Task[None]:
            needed = [(a.device_id, previous[a.device_id]) for a in chunk if a.device_id in previous]
            return asyncio.ensure_future(self._rollouts.save_previous_many(rollout_id, needed))

        saving = save(chunks[0]) if chunks else None
        try:
            for i, chunk in enumerate(chunks):
                assert saving is not None
                await saving
                saving = save(chunks[i + 1]) if i + 1 < len(chunks) else None
                await self._desired.put_many([(a.desired, a.expected_revision) for a in chunk])
        finally:
            if saving is not None:  # a write raised: let the save in flight end (saves are create-only)
                await asyncio.gather(saving, return_exceptions=True)

    @contextlib.contextmanager
    def _span(self, name: str, record: RolloutRecord, parent: str | None, devices: int) -> Iterator[None]:
        """A span of a batch of writes, under the wave's span (or the rollout's) when it is traced."""
        context = context_of(parent)
        if context is None:
            yield
            return
        attributes: dict[str, AttributeValue] = {
            "slmops.rollout_id": record.rollout_id,
            "slmops.wave": record.wave,
            "slmops.devices": devices,
        }
        with _tracer.start_as_current_span(name, context=context, attributes=attributes):
            yield

    async def _revert(self, actions: list[RevertDesired]) -> None:
        conflicts: list[RevisionConflict] = []
        for action in actions:
            if action.previous is None:
                try:
                    await self._desired.delete(action.device_id, expected_revision=action.expected_revision)
                except RevisionConflict as conflict:
                    conflicts.append(conflict)
        try:
            await self._desired.put_many([(a.previous, a.expected_revision) for a in actions if a.previous is not None])
        except RevisionConflict as conflict:
            conflicts.append(conflict)
        if conflicts:
            raise conflicts[0]

    # --- inventory ----------------------------------------------------------------------------

    async def hello(self, hello: DeviceHello, *, at: datetime) -> None:
        """Fold a hello (also the heartbeat) into the device's record."""
        await self._fold(hello.device_id, [(hello, at)])

    async def status(self, status: DeviceStatus, *, at: datetime) -> None:
        """Fold an install status into the device's record (counted and dropped before any hello)."""
        await self._fold(status.device_id, [(status, at)])

    async def _fold(self, device_id: str, reports: Sequence[tuple[DeviceHello | DeviceStatus, datetime]]) -> None:
        for _ in range(MAX_ATTEMPTS):
            current = await self._devices.get(device_id)
            record = current[0] if current else None
            ignored = 0
            for report, at in reports:
                if isinstance(report, DeviceHello):
                    record = inventory.with_hello(record, report, at=at)
                elif (folded := inventory.with_status(record, report, at=at)) is not None:
                    record = folded
                else:
                    ignored += 1  # no hello yet: no record to attach it to
            if record is None or not inventory.worth_writing(current[0] if current else None, record):
                self.statuses_ignored += ignored
                return
            try:
                await self._devices.put(record, expected_revision=current[1] if current else None)
            except RevisionConflict:
                continue
            self.statuses_ignored += ignored
            return
        raise Conflict(f"device {device_id}'s record kept changing")


class _PassTimer:
    """How long each part of a reconcile pass took: logged when the pass was slow (SLOW_PASS)."""

    def __init__(self) -> None:
        self._start = self._last = time.perf_counter()
        self.parts: dict[str, float] = {}

    def lap(self, part: str) -> None:
        now = time.perf_counter()
        self.parts[part] = round((now - self._last) * 1000, 1)
        self._last = now

    def report(self, record: RolloutRecord, decision: Decision) -> None:
        total = time.perf_counter() - self._start
        if total >= SLOW_PASS_SECONDS:
            log.info(
                "slow reconcile pass",
                extra={
                    "rollout_id": record.rollout_id,
                    "state": decision.record.state,
                    "wave": decision.record.wave,
                    "actions": len(decision.actions),
                    "ms": self.parts,
                    "total_ms": round(total * 1000, 1),
                },
            )


def _trace_of(rollout_id: str, command: str | None) -> dict[str, str | None]:
    """The rollout's root span: in the command's trace, under its span, when it came with one."""
    ids = parse_traceparent(command)
    trace_id = ids[0] if ids else derived_trace_id(rollout_id)
    return {
        "traceparent": traceparent(trace_id, derived_span_id(rollout_id)),
        "trace_parent_id": ids[1] if ids else None,
    }


def _digests(record: RolloutRecord, wave: WaveRecord) -> list[str]:
    """The artifacts the wave's devices get: the digests its telemetry is read on."""
    return sorted({record.artifacts[g.artifact].digest for g in wave.groups})


def _smoke_input(detail: ModelDetail) -> SmokeInput | None:
    """The version's evaluation set, which devices run once before switching to a new model."""
    eval_set = detail.version.eval_set
    return SmokeInput(digest=eval_set.digest, size_bytes=eval_set.size_bytes) if eval_set else None


def _record(
    rollout_id: str,
    cmd: StartRollout,
    version: str,
    planned: planning.Plan,
    now: datetime,
    smoke_input: SmokeInput | None,
) -> RolloutRecord:
    artifacts: list[ArtifactChoice] = []
    index: dict[str, int] = {}
    for target in planned.targets:
        if target.artifact.digest not in index:
            index[target.artifact.digest] = len(artifacts)
            a = target.artifact
            artifacts.append(
                ArtifactChoice(variant=target.variant, digest=a.digest, size_bytes=a.size_bytes, signature=a.signature)
            )
    by_id = {t.device_id: t for t in planned.targets}
    waves = []
    for wave in planned.waves:
        groups: dict[tuple[str, int], list[str]] = {}
        for device_id in wave.device_ids:
            t = by_id[device_id]
            groups.setdefault((t.device_class, index[t.artifact.digest]), []).append(device_id)
        waves.append(
            WaveRecord(
                index=wave.index,
                percent=wave.percent,
                groups=[DeviceGroup(device_class=c, artifact=a, device_ids=ids) for (c, a), ids in groups.items()],
            )
        )
    previous = sorted({t.previous_digest for t in planned.targets if t.previous_digest} - set(index))
    return RolloutRecord(
        rollout_id=rollout_id,
        spec=cmd.model_copy(update={"rollout_id": rollout_id}),
        model=cmd.model,
        version=version,
        previous_digests=previous,
        state="pending",
        wave=0,
        artifacts=artifacts,
        smoke_input=smoke_input,
        waves=waves,
        excluded=len(planned.excluded),
        excluded_shown={e.device_id: e.reason[:2000] for e in planned.excluded[:MAX_EXCLUDED_SHOWN]},
        created_at=now,
        updated_at=now,
    )


def _started(record: RolloutRecord) -> tuple[RolloutStarted, str]:
    plan = [
        WavePlan(index=w.index, percent=w.percent, devices=len(w.devices), by_class=w.by_class) for w in record.waves
    ]
    event = RolloutStarted(
        rollout_id=record.rollout_id,
        spec=record.spec,
        version=record.version,
        targets=sum(p.devices for p in plan),
        plan=plan,
    )
    return event, deterministic_id("rollout.started", record.rollout_id)
