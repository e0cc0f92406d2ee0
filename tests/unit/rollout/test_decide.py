"""The rollout decision (services/rollout/decide.py) driven against a small in-memory world: devices
that install (or fail), gates that pass (or not), commands, crashes between deciding and saving.
Invariants checked on every step: no device is written beyond the waves started so far, a revert
restores exactly what each touched device had, and deciding twice on the same inputs asks for the
same actions with the same event ids."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.rollout.decide import (
    REPORTS_POLL,
    REPORTS_POLL_FOR,
    Decision,
    DeviceView,
    GateKey,
    Observations,
    Publish,
    RevertDesired,
    SavePrevious,
    WriteDesired,
    decide,
    device_states,
    gate_keys,
)
from shared.messages.device import DesiredState
from shared.messages.inventory import LastStatus
from shared.messages.rollout import Gate, StartRollout, Wave
from shared.messages.rollout_record import ArtifactChoice, DeviceGroup, RolloutRecord, WaveRecord
from shared.messages.telemetry import GateEvaluation

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OLD, NEW, NEW_SMALL = "a" * 64, "b" * 64, "c" * 64
CLASSES = {"r0": "rpi5", "r1": "rpi5", "r2": "rpi5", "r3": "rpi5", "g0": "gateway", "g1": "gateway"}
GATE = Gate(metric="error_rate", comparator="<=", threshold=0.05, min_samples=10)


def record(**spec: Any) -> RolloutRecord:
    values: dict[str, Any] = {
        "model": "minilm",
        "ref": "2.0",
        "waves": [Wave(percent=50), Wave(percent=100)],
        "gates": [GATE],
        "soak_seconds": 30,
        "install_timeout_seconds": 300,
    } | spec
    start = StartRollout(**values)
    first, second = {"r0": 0, "r1": 0, "g0": 1}, {"r2": 0, "r3": 0, "g1": 1}
    plan = [(50.0, first), (100.0, second)] if len(start.waves) == 2 else [(100.0, first | second)]
    return RolloutRecord(
        rollout_id="ro-1",
        spec=start,
        model="minilm",
        version="2.0",
        previous_digests=[OLD],
        state="pending",
        wave=0,
        artifacts=[
            ArtifactChoice(variant="int8", digest=NEW, size_bytes=10, signature="s"),
            ArtifactChoice(variant="int4", digest=NEW_SMALL, size_bytes=5, signature="s"),
        ],
        waves=[WaveRecord(index=i, percent=p, groups=groups(d)) for i, (p, d) in enumerate(plan)],
        created_at=T0,
        updated_at=T0,
    )


def groups(devices: dict[str, int]) -> list[DeviceGroup]:
    out: dict[tuple[str, int], list[str]] = {}
    for device_id, artifact in devices.items():
        out.setdefault((CLASSES[device_id], artifact), []).append(device_id)
    return [DeviceGroup(device_class=c, artifact=a, device_ids=ids) for (c, a), ids in out.items()]


def by_hand(device_id: str) -> DesiredState:
    return DesiredState(
        device_id=device_id, model="minilm", version="1.0", digest=OLD, size_bytes=9, signature="s", issued_at=T0
    )


@dataclass
class World:
    """KV desired (with revisions), the saved previous states, device statuses, telemetry seen, and
    gate answers; `apply` does what the service's adapters will do with a decision's actions."""

    now: datetime = T0
    desired: dict[str, tuple[DesiredState, int]] = field(default_factory=dict)
    previous: dict[str, DesiredState | None] = field(default_factory=dict)
    status: dict[str, LastStatus] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)
    gates: dict[GateKey, GateEvaluation] = field(default_factory=dict)
    events: dict[str, Publish] = field(default_factory=dict)
    writes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for device_id in CLASSES:
            self.desired[device_id] = (by_hand(device_id), 1)

    def observe(self, **extra: Any) -> Observations:
        views = {
            d: DeviceView(
                desired=self.desired[d][0] if d in self.desired else None,
                revision=self.desired[d][1] if d in self.desired else None,
                previous=self.previous.get(d),
                previous_saved=d in self.previous,
                status=self.status.get(d),
                reported=d in self.reported,
            )
            for d in CLASSES
        }
        return Observations(now=self.now, devices=views, gates=dict(self.gates), **extra)

    def apply(self, decision: Decision) -> None:
        for action in decision.actions:
            if isinstance(action, SavePrevious):
                self.previous.setdefault(action.device_id, action.previous)  # create-only
            elif isinstance(action, WriteDesired | RevertDesired):
                current = self.desired.get(action.device_id)
                assert (current[1] if current else None) == action.expected_revision, "compare-and-set"
                content = action.desired if isinstance(action, WriteDesired) else action.previous
                self.writes.append(action.device_id)
                if content is None:
                    self.desired.pop(action.device_id, None)
                else:
                    self.desired[action.device_id] = (content, (current[1] if current else 0) + 1)
            elif isinstance(action, Publish):
                self.events.setdefault(action.event_id, action)

    def install(self, *device_ids: str, step: str = "active", report: bool = True) -> None:
        """The devices act on their desired state: install it (or fail), and report telemetry."""
        for device_id in device_ids:
            desired, revision = self.desired[device_id]
            self.status[device_id] = LastStatus(
                desired_revision=revision,
                digest=desired.digest,
                step=step,
                active_digest=desired.digest if step == "active" else OLD,
                reason=None if step == "active" else "smoke test failed",
                at=self.now,
            )
            if report and step == "active":
                self.reported.add(device_id)

    def answer_gates(self, rec: RolloutRecord, verdict: Callable[[str | None], str] = lambda _: "Successful") -> None:
        for key in gate_keys(rec):
            self.gates[key] = GateEvaluation(
                verdict=verdict(key[2]),
                method="threshold",
                observed=0.01,
                wave_value=0.01,
                samples=100,
                min_samples=10,
                devices=2,
                reason=f"observed 0.01 on {key[2] or 'the wave'}",
            )

    def types(self) -> list[str]:
        return [p.event.TYPE for p in self.events.values()]


def step(world: World, rec: RolloutRecord, **extra: Any) -> RolloutRecord:
    """Decide, check determinism and the wave invariant, apply, and return the next record."""
    obs = world.observe(**extra)
    decision = decide(rec, obs)
    assert decide(rec, obs) == decision, "a pure function of the record and the observations"
    started = {d for w in decision.record.waves if w.started_at is not None for d in w.devices}
    written = {a.device_id for a in decision.actions if isinstance(a, WriteDesired)}
    assert written <= started, "never past the waves started"
    world.apply(decision)
    return decision.record


def settle(world: World, rec: RolloutRecord) -> RolloutRecord:
    """Step until a step changes nothing more (what the service's loop does between wake-ups)."""
    for _ in range(10):
        nxt = step(world, rec)
        if nxt == rec:
            return rec
        rec = nxt
    raise AssertionError("no fixed point in 10 steps")


def run_to_soak(world: World, rec: RolloutRecord, devices: tuple[str, ...]) -> RolloutRecord:
    rec = step(world, rec)  # writes the wave
    world.install(*devices)
    return step(world, rec)


def test_a_rollout_runs_every_wave_to_completion_with_each_device_on_its_artifact() -> None:
    world = World()
    rec = step(world, record())
    assert rec.state == "installing" and set(world.writes) == {"r0", "r1", "g0"}
    assert world.desired["g0"][0].digest == NEW_SMALL and world.desired["r0"][0].digest == NEW
    assert world.previous == {d: by_hand(d) for d in ("r0", "r1", "g0")}, "saved before the first write"

    world.install("r0", "r1", "g0")
    rec = step(world, rec)
    assert rec.state == "soaking" and rec.waves[0].installed_at == T0
    world.now += timedelta(seconds=30)
    rec = step(world, rec)
    assert rec.state == "soaking", "waits for its gates to be evaluated"
    world.answer_gates(rec)
    rec = step(world, rec)
    assert rec.state == "installing" and rec.wave == 1 and rec.waves[0].verdict == "Successful"
    assert [r.device_class for r in rec.waves[0].gates] == [None, "gateway", "rpi5"], "per class and for the wave"

    world.install("r2", "r3", "g1")
    rec = step(world, rec)
    world.now += timedelta(seconds=30)
    world.answer_gates(rec)
    rec = step(world, rec)
    assert rec.state == "completed"
    assert all(world.desired[d][0].rollout_id == "ro-1" for d in CLASSES)
    assert world.types().count("wave.completed") == 2 and world.types().count("rollout.completed") == 1
    (done,) = [p.event for p in world.events.values() if p.event.TYPE == "rollout.completed"]
    assert done.by_digest == {NEW: 4, NEW_SMALL: 2}  # type: ignore[attr-defined]
    assert world.writes.count("r0") == 1, "a device is written once"


def test_active_is_not_healthy_until_the_device_reports_telemetry_on_the_new_digest() -> None:
    world = World()
    rec = step(world, record())
    world.install("r0", "r1", "g0", report=False)
    assert step(world, rec).state == "installing"
    world.reported |= {"r0", "r1", "g0"}
    assert step(world, rec).state == "soaking"


def test_a_wave_active_enough_and_awaiting_its_first_windows_is_looked_at_a_poll_apart_for_a_while() -> None:
    world = World()
    rec = step(world, record())
    timeout = rec.waves[0].started_at + timedelta(seconds=300)  # type: ignore[operator]
    assert decide(rec, world.observe()).wake_at == timeout, "nothing to wait for but the timeout"
    world.install("r0", "r1", "g0", report=False)
    assert decide(rec, world.observe()).wake_at == world.now + REPORTS_POLL
    world.now += REPORTS_POLL_FOR
    assert decide(rec, world.observe()).wake_at == timeout, "devices that never report: back to the tick"


@pytest.mark.parametrize(
    ("failing", "verdict", "on_failure", "on_inconclusive", "state"),
    [
        ({"rpi5"}, "Failed", "rollback", "pause", "rolled_back"),  # one class regresses: the wave fails
        ({None}, "Failed", "pause", "pause", "paused"),
        ({"gateway"}, "Inconclusive", "rollback", "pause", "paused"),
        ({"gateway"}, "Inconclusive", "rollback", "rollback", "rolled_back"),
    ],
)
def test_a_wave_s_verdict_follows_its_policy(
    failing: set[str | None], verdict: str, on_failure: str, on_inconclusive: str, state: str
) -> None:
    world = World()
    rec = run_to_soak(world, record(on_failure=on_failure, on_inconclusive=on_inconclusive), ("r0", "r1", "g0"))
    world.now += timedelta(seconds=30)
    world.answer_gates(rec, lambda cls: verdict if cls in failing else "Successful")
    rec = settle(world, rec)
    assert rec.waves[0].verdict == verdict and rec.state == state
    if state == "rolled_back":
        assert rec.trigger == "gate" and rec.reverted == 3


def test_a_revert_restores_exactly_what_each_touched_device_had_and_nothing_else() -> None:
    world = World()
    del world.desired["r1"]  # this one had no desired state at all
    rec = run_to_soak(world, record(), ("r0", "r1", "g0"))
    world.now += timedelta(seconds=30)
    world.answer_gates(rec, lambda cls: "Failed" if cls == "rpi5" else "Successful")
    rec = step(world, rec)
    assert rec.state == "rolling_back"
    rec = step(world, rec)
    assert rec.state == "rolled_back"
    assert world.desired["r0"][0] == by_hand("r0") and world.desired["g0"][0] == by_hand("g0")
    assert "r1" not in world.desired, "no desired state before: none after"
    assert {d: world.desired[d][0] for d in ("r2", "r3", "g1")} == {d: by_hand(d) for d in ("r2", "r3", "g1")}
    assert sorted(world.writes) == sorted(["r0", "r1", "g0"] * 2), "each touched device written, then reverted, once"
    (rolled,) = [p.event for p in world.events.values() if p.event.TYPE == "rollout.rolled_back"]
    assert rolled.devices == 3 and rolled.trigger == "gate"  # type: ignore[attr-defined]


def test_every_desired_state_carries_the_rollout_s_settings_and_a_revert_puts_back_the_old_ones() -> None:
    world = World()
    old = by_hand("r0").model_copy(update={"config": {"lang": "en"}})
    world.desired["r0"] = (old, 1)
    rec = run_to_soak(world, record(config={"lang": "de", "limits": {"max_tokens": 64}}), ("r0", "r1", "g0"))
    assert {world.desired[d][0].config["lang"] for d in ("r0", "r1", "g0")} == {"de"}  # type: ignore[index]
    rec = step(world, rec)
    assert sorted(world.writes) == ["g0", "r0", "r1"], "on its wave's desired state, settings included: not again"
    world.now += timedelta(seconds=30)
    world.answer_gates(rec, lambda cls: "Failed")
    rec = settle(world, rec)
    assert rec.state == "rolled_back"
    assert world.desired["r0"][0] == old and world.desired["g0"][0].config is None, "exactly what they had"


def test_an_install_that_cannot_reach_its_threshold_fails_early_and_a_slow_one_at_its_timeout() -> None:
    world = World()
    rec = step(world, record(install_threshold=0.6))
    world.install("r0", "r1")
    world.install("g0", step="failed")  # 2 of 3 healthy reach 0.6
    assert step(world, rec).state == "soaking"

    world = World()
    rec = step(world, record(install_threshold=1.0))
    world.install("r0")
    world.install("g0", step="failed")
    rec = settle(world, rec)
    assert rec.state == "rolled_back" and rec.trigger == "install" and "1 of 3 devices failed" in (rec.reason or "")
    assert "gate.verdict" in world.types()

    world = World()
    rec = step(world, record(install_timeout_seconds=60))
    world.install("r0")
    world.now += timedelta(seconds=59)
    assert step(world, rec).state == "installing"
    world.now += timedelta(seconds=1)
    assert settle(world, rec).state == "rolled_back"


def test_writes_are_paced_by_the_download_rate() -> None:
    world = World()
    rec = record(max_download_starts_per_second=2)
    decision = decide(rec, world.observe())
    world.apply(decision)
    rec = decision.record
    assert world.writes == ["r0"], "one at once"
    world.now += timedelta(seconds=0.4)
    decision = decide(rec, world.observe())
    assert not any(isinstance(a, WriteDesired) for a in decision.actions)
    assert decision.wake_at == T0 + timedelta(seconds=0.5)
    world.now += timedelta(seconds=0.6)  # 1.0 s in: three allowed
    world.apply(decide(rec, world.observe()))
    assert world.writes == ["r0", "r1", "g0"]


def test_a_crash_between_apply_and_save_repeats_nothing_that_differs() -> None:
    world = World()
    rec = record()
    first = decide(rec, world.observe())
    world.apply(first)  # ... and the service dies before saving `first.record`
    again = decide(rec, world.observe())
    writes = [a for a in again.actions if isinstance(a, WriteDesired)]
    assert writes == [], "every desired state is already what the wave wants"
    assert {p.event_id for p in again.actions if isinstance(p, Publish)} <= set(world.events)


def test_pause_resume_abort_and_rollback_by_command() -> None:
    world = World()
    rec = step(world, record())
    paused = step(world, rec, command="pause")
    assert paused.state == "paused" and paused.paused_from == "installing"
    world.install("r0", "r1", "g0")
    assert step(world, paused).state == "paused", "a paused rollout does not advance"
    resumed = step(world, paused, command="resume")
    assert resumed.state == "installing"
    assert step(world, resumed).state == "soaking"

    aborted = step(world, resumed, command="abort")
    assert aborted.state == "aborted" and world.desired["r0"][0].rollout_id == "ro-1", "abort reverts nothing"
    assert step(world, aborted).state == "aborted"

    back = settle(world, step(world, aborted, command="rollback", command_reason="wrong model"))
    assert back.state == "rolled_back" and back.trigger == "manual" and back.reason == "wrong model"
    assert world.desired["r0"][0] == by_hand("r0")
    changes = [p.event for p in world.events.values() if p.event.TYPE == "rollout.state_changed"]
    assert len(changes) == back.transitions, "every change published once, none lost to a shared id"


def test_a_wave_that_adds_no_device_passes_without_gates() -> None:
    world = World()
    rec = record(waves=[Wave(percent=50), Wave(percent=100)])
    rec = rec.model_copy(update={"waves": [rec.waves[0], rec.waves[1].model_copy(update={"groups": []})]})
    rec = run_to_soak(world, rec, ("r0", "r1", "g0"))
    world.now += timedelta(seconds=30)
    world.answer_gates(rec)
    rec = step(world, rec)  # wave 0 passes, wave 1 starts ...
    rec = step(world, rec)  # ... and, empty, passes at once
    assert rec.state == "completed" and rec.waves[1].verdict == "Successful" and rec.waves[1].gates == []


def test_no_gates_means_the_wave_passes_once_soaked() -> None:
    world = World()
    rec = run_to_soak(world, record(gates=[], waves=[Wave(percent=100)]), tuple(CLASSES))
    assert rec.state == "soaking"
    world.now += timedelta(seconds=29)
    assert step(world, rec).state == "soaking"
    world.now += timedelta(seconds=1)
    assert step(world, rec).state == "completed"


def test_a_wave_installed_with_no_soak_asks_for_its_gates_at_once_and_a_missing_one_shortly() -> None:
    world = World()
    rec = step(world, record(soak_seconds=0))
    world.install("r0", "r1", "g0")
    installed = decide(rec, world.observe())
    assert installed.record.state == "soaking" and installed.wake_at == T0, "gates due on the next pass, now"
    rec = step(world, rec)

    world.answer_gates(rec)
    del world.gates[gate_keys(rec)[-1]]  # one evaluation went missing
    waiting = decide(rec, world.observe())
    assert waiting.record.state == "soaking" and waiting.wake_at == T0 + timedelta(seconds=1)


def test_an_active_status_about_an_earlier_write_does_not_count() -> None:
    world = World()
    rec = step(world, record())
    world.install("r0", "r1", "g0")
    stale = {d: s.model_copy(update={"desired_revision": s.desired_revision - 1}) for d, s in world.status.items()}
    world.status = stale  # "active" on the same digest, but for the entry before the rollout's
    assert step(world, rec).state == "installing"


def test_the_trace_has_a_root_a_span_per_wave_and_devices_continue_their_wave_s_span() -> None:
    world = World()
    trace_id, root = "1" * 32, "2" * 16
    rec = record().model_copy(update={"traceparent": f"00-{trace_id}-{root}-01", "trace_parent_id": "3" * 16})
    decisions: list[Decision] = []
    for _ in range(2):
        decisions.append(decide(rec, world.observe()))
        world.apply(decisions[-1])
        rec = decisions[-1].record
        world.install(*rec.waves[rec.wave].devices)
        decisions.append(decide(rec, world.observe()))
        world.apply(decisions[-1])
        rec = decisions[-1].record
        world.now += timedelta(seconds=30)
        world.answer_gates(rec)
        decisions.append(decide(rec, world.observe()))
        world.apply(decisions[-1])
        rec = decisions[-1].record
    assert rec.state == "completed"
    spans = [s for d in decisions for s in d.spans]
    assert [s.name for s in spans] == ["rollout.wave", "rollout.wave", "rollout"], "each once, when it ends"
    wave0, wave1, top = spans
    assert {s.trace_id for s in spans} == {trace_id}
    assert top.span_id == root and top.parent_id == "3" * 16 and top.start == T0, "under the command's span"
    assert wave0.parent_id == wave1.parent_id == root and wave0.span_id != wave1.span_id
    assert wave0.attributes["slmops.verdict"] == "Successful" and top.error is None
    # The device's install continues the wave's span: its desired state names it.
    assert world.desired["r0"][0].traceparent == f"00-{trace_id}-{wave0.span_id}-01"
    assert world.desired["r2"][0].traceparent == f"00-{trace_id}-{wave1.span_id}-01"


def test_a_failed_wave_and_a_reverted_rollout_end_their_spans_in_error() -> None:
    world = World()
    rec = record().model_copy(update={"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"})
    rec = run_to_soak(world, rec, ("r0", "r1", "g0"))
    world.now += timedelta(seconds=30)
    world.answer_gates(rec, lambda cls: "Failed" if cls == "gateway" else "Successful")
    failed = decide(rec, world.observe())
    world.apply(failed)
    (wave,) = failed.spans
    assert wave.error == "wave 0 Failed" and wave.attributes["slmops.verdict"] == "Failed"
    reverted = decide(failed.record, world.observe())
    assert reverted.record.state == "rolled_back"
    (top,) = reverted.spans
    assert top.name == "rollout" and top.error is not None and top.error.startswith("rolled_back")
    assert top.parent_id is None, "no command span: the rollout's span is the trace's root"


def test_an_untraced_rollout_records_no_span_and_writes_no_traceparent() -> None:
    world = World()
    rec = run_to_soak(world, record(), ("r0", "r1", "g0"))
    assert world.desired["r0"][0].traceparent is None
    world.now += timedelta(seconds=30)
    world.answer_gates(rec)
    assert decide(rec, world.observe()).spans == ()


def test_rollout_show_counts_each_wave_s_devices_by_state() -> None:
    world = World()
    rec = step(world, record())  # wave 0 written: r0, r1, g0
    world.install("r0")
    world.install("g0", step="failed")

    def states() -> dict[int, dict[str, int]]:
        views = world.observe().devices
        return device_states(rec, views)

    assert states() == {0: {"active": 1, "failed": 1, "installing": 1}}, "wave 1 has not started"
    world.now += timedelta(seconds=1)
    rec = step(world, rec, command="rollback")
    rec = settle(world, rec)
    assert rec.state == "rolled_back"
    assert states() == {0: {"reverted": 3}}
