"""The rollout controller's decision: a pure function of the record and what was observed, the clock
included (STYLE.md, "The shape of a reconcile loop").

Level-triggered: every call compares what the record says should be with what the devices' desired
states and statuses say is, and asks for whatever is still missing. A crash between applying and
saving therefore only repeats writes whose content is the same (a desired state is a function of
the record: `issued_at` is the wave's start, not the clock) and events whose ids are the same
(derived from the rollout, the wave and the transition), which JetStream de-duplicates.

States: pending → installing (desired states written, paced) → soaking (enough of the wave healthy:
active on the new digest *and* reporting telemetry on it) → gates → the next wave's installing, or
completed. A Failed wave (install threshold missed, or a gate) follows `on_failure`, an Inconclusive
one `on_inconclusive`. rolling_back puts back every device the rollout touched, in every wave so
far, then rolled_back. Commands: pause, resume, abort, rollback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from shared.messages.device import DesiredState
from shared.messages.envelope import Message, deterministic_id
from shared.messages.inventory import LastStatus
from shared.messages.rollout import (
    Gate,
    GateVerdict,
    RolloutCompleted,
    RolloutRolledBack,
    RolloutState,
    RolloutStateChanged,
    Verdict,
    WaveCompleted,
    WavePlan,
    WaveStarted,
)
from shared.messages.rollout_record import GateResult, RolloutRecord, WaveRecord
from shared.messages.telemetry import GateEvaluation
from shared.tracing import FinishedSpan, derived_span_id, parse_traceparent, traceparent

Command = Literal["pause", "resume", "abort", "rollback"]
GateKey = tuple[int, int, str | None]  # (wave, gate index, device class or None for the whole wave)
TERMINAL: frozenset[RolloutState] = frozenset({"completed", "rolled_back", "aborted"})
GATE_RETRY = timedelta(seconds=1)  # a due gate not evaluated yet: look again this soon
REPORTS_POLL = timedelta(seconds=0.1)  # enough of a wave active, its first windows awaited: look this often
REPORTS_POLL_FOR = timedelta(seconds=5)  # ... for this long after the newest activation


@dataclass(frozen=True, kw_only=True)
class DeviceView:
    """One planned device as observed now.

    Attributes:
        desired: its KV `desired` entry now (None: no key).
        revision: that entry's KV revision, for compare-and-set (None: no key).
        previous: what the rollout saved before its first write to the device.
        previous_saved: whether that was saved (it may be None: the device had no desired state).
        status: its latest install status (inventory).
        reported: a telemetry window on its target digest, from this rollout, has been folded.
    """

    desired: DesiredState | None = None
    revision: int | None = None
    previous: DesiredState | None = None
    previous_saved: bool = False
    status: LastStatus | None = None
    reported: bool = False


@dataclass(frozen=True, kw_only=True)
class Observations:
    now: datetime
    devices: Mapping[str, DeviceView]
    gates: Mapping[GateKey, GateEvaluation] = field(default_factory=dict)
    command: Command | None = None
    command_reason: str | None = None


@dataclass(frozen=True)
class SavePrevious:
    """Keep what the device's desired state was before the rollout's first write (create-only)."""

    device_id: str
    previous: DesiredState | None


@dataclass(frozen=True)
class WriteDesired:
    device_id: str
    desired: DesiredState
    expected_revision: int | None


@dataclass(frozen=True)
class RevertDesired:
    """Put back the saved previous desired state (None: delete the key, as there was none)."""

    device_id: str
    previous: DesiredState | None
    expected_revision: int | None


@dataclass(frozen=True)
class Publish:
    event: Message
    event_id: str


Action = SavePrevious | WriteDesired | RevertDesired | Publish


@dataclass(frozen=True, kw_only=True)
class Decision:
    """The next record, the actions that bring the devices towards it, when to look again, and the
    spans the decision ends (recorded once the record is saved)."""

    record: RolloutRecord
    actions: tuple[Action, ...] = ()
    wake_at: datetime | None = None
    spans: tuple[FinishedSpan, ...] = ()


def decide(record: RolloutRecord, obs: Observations) -> Decision:
    """The next record, the actions that bring the devices towards it, and when to look again."""
    decision = _decide(record, obs)
    return replace(decision, spans=spans_ended(record, decision.record, obs.now))


def _decide(record: RolloutRecord, obs: Observations) -> Decision:
    if obs.command is not None:
        commanded = _command(record, obs)
        if commanded is not None:
            return commanded
    if record.state == "pending":
        return _start_wave(record, 0, obs, events=[])
    if record.state == "installing":
        return _installing(record, obs)
    if record.state == "soaking":
        return _soaking(record, obs)
    if record.state == "rolling_back":
        return _rolling_back(record, obs)
    return Decision(record=record)  # paused, or ended


# --- commands ---------------------------------------------------------------------------------


def _command(record: RolloutRecord, obs: Observations) -> Decision | None:
    reason = obs.command_reason or f"operator: {obs.command}"
    if obs.command == "rollback" and record.state not in ("rolling_back", "rolled_back"):
        moved = _moved(record, "rolling_back", obs.now, reason=reason, trigger="manual")
        return _rolling_back(moved.record, obs, events=list(_events(moved)))
    if obs.command == "abort" and record.state not in TERMINAL:
        return _moved(record, "aborted", obs.now, reason=reason)
    if obs.command == "pause" and record.state in ("pending", "installing", "soaking"):
        paused = _moved(record, "paused", obs.now, reason=reason)
        return Decision(record=paused.record.model_copy(update={"paused_from": record.state}), actions=paused.actions)
    if obs.command == "resume" and record.state == "paused" and record.paused_from is not None:
        resumed = _moved(record, record.paused_from, obs.now, reason=reason)
        return Decision(record=resumed.record.model_copy(update={"paused_from": None}), actions=resumed.actions)
    return None  # not applicable in this state: the loop goes on as if it had not come


# --- waves ------------------------------------------------------------------------------------


def _start_wave(record: RolloutRecord, index: int, obs: Observations, *, events: list[Publish]) -> Decision:
    """Start wave `index` and write its first desired states in the same decision."""
    waves = list(record.waves)
    waves[index] = waves[index].model_copy(update={"started_at": obs.now})
    started = record.model_copy(update={"waves": waves, "wave": index, "updated_at": obs.now})
    wave = waves[index]
    plan = WavePlan(index=index, percent=wave.percent, devices=len(wave.devices), by_class=wave.by_class)
    events.append(_publish(WaveStarted(rollout_id=record.rollout_id, wave=plan), record, "wave.started", index))
    moved = _moved(started, "installing", obs.now, reason=f"wave {index} started")
    installing = _installing(moved.record, obs)
    return Decision(
        record=installing.record, actions=(*events, *moved.actions, *installing.actions), wake_at=installing.wake_at
    )


def _installing(record: RolloutRecord, obs: Observations) -> Decision:
    wave = record.waves[record.wave]
    assert wave.started_at is not None, "an installing wave has started"
    saves: list[Action] = []
    writes: list[Action] = []
    budget = _write_budget(record, wave, obs)
    waiting = 0  # devices still to write once the rate limit allows
    for device_id, artifact in wave.devices.items():
        view = obs.devices.get(device_id)
        if view is None:
            continue  # not observed: its revision is unknown, so it cannot be written safely
        if _written(record, wave, view):
            continue
        if budget <= 0:
            waiting += 1
            continue
        budget -= 1
        if not view.previous_saved:
            saves.append(SavePrevious(device_id, view.desired))
        writes.append(WriteDesired(device_id, desired_state(record, wave, device_id, artifact), view.revision))
    actions = [*saves, *writes]  # every save is durable before the writes go out
    health = _health(record, wave, obs)
    healthy, failed = health.healthy, health.failed
    size = len(wave.devices)
    if size == 0:  # a wave that adds no device (a small fleet's later shares): nothing new to judge
        ended = _wave_ended(record, wave, "Successful", obs, healthy=0, failed=0, gates=[])
        return _after_verdict(ended, "Successful", obs, trigger="gate", reason="the wave adds no device")
    needed = math.ceil(record.spec.install_threshold * size)
    if healthy >= needed:
        waves = list(record.waves)
        waves[record.wave] = wave.model_copy(update={"installed_at": obs.now})
        installed = record.model_copy(update={"waves": waves, "updated_at": obs.now})
        moved = _moved(installed, "soaking", obs.now, reason=f"{healthy} of {size} devices healthy")
        soaked = _soaking(moved.record, obs)
        return Decision(
            record=soaked.record, actions=(*actions, *moved.actions, *soaked.actions), wake_at=soaked.wake_at
        )
    deadline = wave.started_at + timedelta(seconds=record.spec.install_timeout_seconds)
    if failed > size - needed or obs.now >= deadline:
        why = (
            f"{failed} of {size} devices failed to install; at most {size - needed} may"
            if failed > size - needed
            else f"{healthy} of {size} devices healthy after {record.spec.install_timeout_seconds:g} s; {needed} needed"
        )
        verdict = GateVerdict(
            rollout_id=record.rollout_id,
            wave=record.wave,
            metric="install_rate",
            comparator=">=",
            threshold=record.spec.install_threshold,
            observed=healthy / size if size else None,
            samples=size,
            min_samples=1,
            verdict="Failed",
            reason=why,
        )
        ended = _wave_ended(record, wave, "Failed", obs, healthy=healthy, failed=failed, gates=[])
        failed_decision = _after_verdict(ended, "Failed", obs, trigger="install", reason=why)
        published = _publish(verdict, record, "gate.verdict.install", record.wave)
        return Decision(
            record=failed_decision.record,
            actions=(*actions, published, *failed_decision.actions),
            wake_at=failed_decision.wake_at,
        )
    wake = min(deadline, _next_write_slot(record, wave, obs)) if waiting else deadline
    if health.active >= needed and health.last_active and obs.now - health.last_active < REPORTS_POLL_FOR:
        # Enough devices switched; what is missing is their first telemetry windows (a second after
        # the switch), which wake nothing here: look for them at a poll's pace rather than a tick's,
        # for a while (a wave whose devices never report falls back to the tick).
        wake = min(wake, obs.now + REPORTS_POLL)
    return Decision(record=record, actions=tuple(actions), wake_at=wake)


def _soaking(record: RolloutRecord, obs: Observations) -> Decision:
    wave = record.waves[record.wave]
    assert wave.installed_at is not None, "a soaking wave was installed"
    soak = wave_soak(record, wave.index)
    until = wave.installed_at + timedelta(seconds=soak)
    if obs.now < until:
        return Decision(record=record, wake_at=until)
    keys = gate_keys(record)
    if any(key not in obs.gates for key in keys):
        # The observer evaluates the gates of a wave it saw soaking past its soak: none observed means
        # the wave got here in this decision (installed, no soak left), so they are due on the next
        # pass, at once; some observed but not all, an evaluation went missing: again shortly.
        return Decision(record=record, wake_at=obs.now if not obs.gates else obs.now + GATE_RETRY)
    gates = wave_gates(record, wave.index)
    results = [
        GateResult(
            gate=g,
            device_class=cls,
            verdict=obs.gates[(w, g, cls)].verdict,
            observed=obs.gates[(w, g, cls)].observed,
            baseline=obs.gates[(w, g, cls)].baseline,
            samples=obs.gates[(w, g, cls)].samples,
            reason=obs.gates[(w, g, cls)].reason[:2000],
        )
        for (w, g, cls) in keys
    ]
    verdict = combined([r.verdict for r in results])
    health = _health(record, wave, obs)
    healthy, failed = health.healthy, health.failed
    ended = _wave_ended(record, wave, verdict, obs, healthy=healthy, failed=failed, gates=results)
    failing = [r for r in results if r.verdict == verdict and verdict != "Successful"]
    reason = (
        "; ".join(
            f"{gates[r.gate].metric}{' on ' + r.device_class if r.device_class else ''}: {r.reason}" for r in failing
        )
        or "every gate passed"
    )
    return _after_verdict(ended, verdict, obs, trigger="gate", reason=reason)


def _after_verdict(
    ended: Decision, verdict: Verdict, obs: Observations, *, trigger: Literal["gate", "install"], reason: str
) -> Decision:
    record = ended.record
    events = [a for a in ended.actions if isinstance(a, Publish)]
    if verdict == "Successful":
        if record.wave + 1 < len(record.waves):
            return _start_wave(record, record.wave + 1, obs, events=events)
        return _complete(record, obs, events=events)
    policy = record.spec.on_failure if verdict == "Failed" else record.spec.on_inconclusive
    if policy == "pause":
        paused = _moved(record, "paused", obs.now, reason=f"wave {record.wave} {verdict}: {reason}")
        return Decision(
            record=paused.record.model_copy(update={"paused_from": "soaking" if trigger == "gate" else "installing"}),
            actions=(*events, *paused.actions),
        )
    moved = _moved(record, "rolling_back", obs.now, reason=f"wave {record.wave} {verdict}: {reason}", trigger=trigger)
    return _rolling_back(moved.record, obs, events=[*events, *_events(moved)])


def _wave_ended(
    record: RolloutRecord,
    wave: WaveRecord,
    verdict: Verdict,
    obs: Observations,
    *,
    healthy: int,
    failed: int,
    gates: list[GateResult],
) -> Decision:
    waves = list(record.waves)
    waves[wave.index] = wave.model_copy(update={"verdict": verdict, "gates": gates})
    completed = WaveCompleted(
        rollout_id=record.rollout_id,
        wave=wave.index,
        percent=wave.percent,
        devices=len(wave.devices),
        installed=healthy,
        failed=min(failed, len(wave.devices) - healthy),
        verdict=verdict,
    )
    return Decision(
        record=record.model_copy(update={"waves": waves, "updated_at": obs.now}),
        actions=(_publish(completed, record, "wave.completed", wave.index),),
    )


def _complete(record: RolloutRecord, obs: Observations, *, events: list[Publish]) -> Decision:
    by_digest: dict[str, int] = {}
    for wave in record.waves:
        for index in wave.devices.values():
            digest = record.artifacts[index].digest
            by_digest[digest] = by_digest.get(digest, 0) + 1
    done = RolloutCompleted(
        rollout_id=record.rollout_id,
        model=record.model,
        version=record.version,
        devices=sum(by_digest.values()),
        by_digest=by_digest,
    )
    moved = _moved(record, "completed", obs.now, reason="every wave passed")
    return Decision(
        record=moved.record, actions=(*events, _publish(done, record, "rollout.completed", 0), *moved.actions)
    )


# --- revert -----------------------------------------------------------------------------------


def _rolling_back(record: RolloutRecord, obs: Observations, *, events: list[Publish] | None = None) -> Decision:
    """Revert every device of every wave so far whose desired state is still this rollout's."""
    actions: list[Action] = list(events or [])
    touched = 0
    for wave in record.waves[: record.wave + 1]:
        for device_id in wave.devices:
            view = obs.devices.get(device_id, DeviceView())
            if not view.previous_saved:
                continue  # never written (a crash between save and write leaves nothing to undo either)
            touched += 1
            if view.desired is not None and view.desired.rollout_id == record.rollout_id:
                actions.append(RevertDesired(device_id, view.previous, view.revision))
    reverting = any(isinstance(a, RevertDesired) for a in actions)
    record = record.model_copy(update={"reverted": touched, "updated_at": obs.now})
    if reverting:
        return Decision(record=record, actions=tuple(actions), wake_at=obs.now)
    rolled_back = RolloutRolledBack(
        rollout_id=record.rollout_id,
        trigger=record.trigger or "manual",
        wave=record.wave,
        reason=record.reason or "rolled back",
        devices=touched,
    )
    moved = _moved(record, "rolled_back", obs.now, reason=record.reason)
    return Decision(
        record=moved.record,
        actions=(*actions, _publish(rolled_back, record, "rollout.rolled_back", 0), *moved.actions),
    )


# --- helpers ----------------------------------------------------------------------------------


def desired_state(record: RolloutRecord, wave: WaveRecord, device_id: str, artifact: int) -> DesiredState:
    """What the device is told to run in this wave: a function of the record alone."""
    choice = record.artifacts[artifact]
    assert wave.started_at is not None, "desired states are written once the wave has started"
    return DesiredState(
        device_id=device_id,
        rollout_id=record.rollout_id,
        wave=wave.index,
        model=record.model,
        version=record.version,
        variant=choice.variant,
        digest=choice.digest,
        size_bytes=choice.size_bytes,
        signature=choice.signature,
        smoke_input=record.smoke_input,
        shadow=record.spec.shadow,
        config=record.spec.config,
        traceparent=wave_traceparent(record, wave.index),
        issued_at=wave.started_at,
    )


# --- the rollout's trace -----------------------------------------------------------------------
#
# One trace per rollout: its root span (`record.traceparent`, a child of the command's span when
# the command came with one), a span per wave under it, and under each wave its gate evaluations,
# its desired-state writes and every device's install (the device continues the traceparent of its
# desired state, which names the wave's span). Span ids are derived from the rollout and the wave,
# so they are known before the spans end and are the same in every replica and after a restart.


def wave_span_id(record: RolloutRecord, index: int) -> str:
    return derived_span_id(record.rollout_id, "wave", str(index))


def wave_traceparent(record: RolloutRecord, index: int) -> str | None:
    """The traceparent naming wave `index`'s span (None: the rollout is not traced)."""
    ids = parse_traceparent(record.traceparent)
    return traceparent(ids[0], wave_span_id(record, index)) if ids else None


def spans_ended(before: RolloutRecord, after: RolloutRecord, now: datetime) -> tuple[FinishedSpan, ...]:
    """The spans a decision ends: a wave's when it gets its verdict, the root's when the rollout ends."""
    ids = parse_traceparent(after.traceparent)
    if ids is None:
        return ()
    trace_id, root = ids
    spans = []
    for old, new in zip(before.waves, after.waves, strict=True):
        if old.verdict is None and new.verdict is not None:
            spans.append(
                FinishedSpan(
                    name="rollout.wave",
                    trace_id=trace_id,
                    span_id=wave_span_id(after, new.index),
                    parent_id=root,
                    start=new.started_at or now,
                    end=now,
                    attributes={
                        "slmops.rollout_id": after.rollout_id,
                        "slmops.wave": new.index,
                        "slmops.percent": new.percent,
                        "slmops.devices": len(new.devices),
                        "slmops.verdict": new.verdict,
                    },
                    error=f"wave {new.index} Failed" if new.verdict == "Failed" else None,  # Inconclusive: no error
                )
            )
    if before.state not in TERMINAL and after.state in TERMINAL:
        spans.append(
            FinishedSpan(
                name="rollout",
                trace_id=trace_id,
                span_id=root,
                parent_id=after.trace_parent_id,
                start=after.created_at,
                end=now,
                attributes={
                    "slmops.rollout_id": after.rollout_id,
                    "slmops.model": after.model,
                    "slmops.version": after.version,
                    "slmops.state": after.state,
                    "slmops.devices": sum(len(w.devices) for w in after.waves),
                    "slmops.reverted": after.reverted,
                },
                error=None if after.state == "completed" else f"{after.state}: {after.reason or ''}"[:500],
            )
        )
    return tuple(spans)


def wave_gates(record: RolloutRecord, index: int) -> list[Gate]:
    own = record.spec.waves[index].gates
    return list(own) if own is not None else list(record.spec.gates)


def wave_soak(record: RolloutRecord, index: int) -> float:
    own = record.spec.waves[index].soak_seconds
    return own if own is not None else record.spec.soak_seconds


def gate_keys(record: RolloutRecord) -> list[GateKey]:
    """The evaluations the current wave's verdict needs: every gate for the whole wave and for each
    class in it, so a regression on one class cannot hide in the fleet average."""
    wave = record.waves[record.wave]
    classes = sorted(set(wave.classes.values()))
    return [(wave.index, g, cls) for g in range(len(wave_gates(record, wave.index))) for cls in (None, *classes)]


def combined(verdicts: list[Verdict]) -> Verdict:
    """Any Failed fails the wave; else any Inconclusive leaves it inconclusive; no gate passes."""
    if "Failed" in verdicts:
        return "Failed"
    return "Inconclusive" if "Inconclusive" in verdicts else "Successful"


@dataclass(frozen=True)
class _Health:
    """A wave's devices by outcome. Healthy: it acted on this rollout's write (its status names that
    KV revision, so an older "active" on the same digest does not count), is active on its target
    and has reported telemetry on it. Failed: it reported failed or rolled_back on that write.
    Active: on its target, reported or not; `last_active`: the newest such status."""

    healthy: int = 0
    failed: int = 0
    active: int = 0
    last_active: datetime | None = None


def _health(record: RolloutRecord, wave: WaveRecord, obs: Observations) -> _Health:
    healthy = failed = active = 0
    last_active: datetime | None = None
    for device_id, artifact in wave.devices.items():
        view = obs.devices.get(device_id, DeviceView())
        status = view.status
        ours = view.desired is not None and view.desired.rollout_id == record.rollout_id
        if not ours or status is None or status.desired_revision != view.revision:
            continue
        if status.digest != record.artifacts[artifact].digest:
            continue
        if status.step == "active":
            active += 1
            healthy += view.reported
            last_active = status.at if last_active is None else max(last_active, status.at)
        elif status.step in ("failed", "rolled_back"):
            failed += 1
    return _Health(healthy=healthy, failed=failed, active=active, last_active=last_active)


def _written(record: RolloutRecord, wave: WaveRecord, view: DeviceView) -> bool:
    """The device's desired state is this wave's: only this rollout writes its id into a desired
    state, and what it writes for a wave is a function of the record (`desired_state`: its settings
    are the spec's too), so no field needs comparing (which, over 10,000 devices a pass, is what a
    pass would cost, a `config` of up to 16 KiB each)."""
    return view.desired is not None and view.desired.rollout_id == record.rollout_id and view.desired.wave == wave.index


def device_states(record: RolloutRecord, devices: Mapping[str, DeviceView]) -> dict[int, dict[str, int]]:
    """Per wave started so far, how many of its devices are in each state (for `rollout show`):
    pending (not written yet), installing (written, no outcome), active (on its target for this
    rollout's write), failed (failed or rolled back on it), reverted (put back on what it had)."""
    out: dict[int, dict[str, int]] = {}
    for wave in record.waves[: record.wave + 1]:
        if wave.started_at is None:
            continue
        counts: dict[str, int] = {}
        for device_id, artifact in wave.devices.items():
            view = devices.get(device_id, DeviceView())
            ours = view.desired is not None and view.desired.rollout_id == record.rollout_id
            status = view.status if ours and view.status and view.status.desired_revision == view.revision else None
            if not ours:
                state = "reverted" if view.previous_saved else "pending"
            elif status is None:
                state = "installing"
            elif status.step == "active" and status.digest == record.artifacts[artifact].digest:
                state = "active"
            elif status.step in ("failed", "rolled_back"):
                state = "failed"
            else:
                state = "installing"
            counts[state] = counts.get(state, 0) + 1
        out[wave.index] = counts
    return out


def _write_budget(record: RolloutRecord, wave: WaveRecord, obs: Observations) -> int:
    """How many more desired states this wave may write now under the download rate limit."""
    rate = record.spec.max_download_starts_per_second
    if rate is None:
        return len(wave.devices)
    assert wave.started_at is not None
    written = sum(1 for d in wave.devices if (v := obs.devices.get(d)) and _written(record, wave, v))
    allowed = math.floor(max(0.0, (obs.now - wave.started_at).total_seconds()) * rate) + 1
    return max(0, allowed - written)


def _next_write_slot(record: RolloutRecord, wave: WaveRecord, obs: Observations) -> datetime:
    rate = record.spec.max_download_starts_per_second
    assert wave.started_at is not None and rate is not None
    elapsed = (obs.now - wave.started_at).total_seconds()
    return wave.started_at + timedelta(seconds=(math.floor(elapsed * rate) + 1) / rate)


def _moved(
    record: RolloutRecord,
    to: RolloutState,
    now: datetime,
    *,
    reason: str | None,
    trigger: Literal["gate", "install", "manual"] | None = None,
) -> Decision:
    """The record in state `to`, with its state_changed event."""
    update: dict[str, object] = {
        "state": to,
        "reason": reason,
        "updated_at": now,
        "transitions": record.transitions + 1,
    }
    if trigger is not None:
        update["trigger"] = trigger
    changed = RolloutStateChanged(
        rollout_id=record.rollout_id, from_state=record.state, to_state=to, wave=record.wave, reason=reason
    )
    # The n-th change of this rollout: a repeat after a crash has the same n, a later pause another.
    event_id = deterministic_id("rollout.state_changed", record.rollout_id, str(record.transitions))
    return Decision(record=record.model_copy(update=update), actions=(Publish(changed, event_id),))


def _events(decision: Decision) -> list[Publish]:
    return [a for a in decision.actions if isinstance(a, Publish)]


def _publish(event: Message, record: RolloutRecord, what: str, wave: int) -> Publish:
    return Publish(event, deterministic_id(what, record.rollout_id, str(wave)))
