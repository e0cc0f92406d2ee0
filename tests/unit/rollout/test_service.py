"""The rollout service's use cases (services/rollout/service.py) over the in-memory adapters: the
inventory from hellos and statuses, starting (and refusing) a rollout, the reconcile loop to
completion and to a revert, commands, and two replicas reconciling the same rollout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.rollout.adapters.memory import (
    MemoryAnnouncer,
    MemoryDesiredStore,
    MemoryDeviceStore,
    MemoryRegistry,
    MemoryRolloutStore,
    MemoryTelemetry,
)
from services.rollout.service import RolloutRefused, RolloutService
from shared.errors import NotFound
from shared.messages.device import DesiredState, DeviceStatus
from shared.messages.registry import (
    Artifact,
    EvalSet,
    ModelDetail,
    ModelVersionRecord,
    OnnxInfo,
    Requirements,
    VariantRecord,
)
from shared.messages.rollout import Gate, Selector, StartRollout, Wave
from tests.support import device_hello as hello

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OLD, BASE, INT8 = "a" * 64, "b" * 64, "c" * 64
FLEET = {"r0": "rpi5", "r1": "rpi5", "r2": "rpi5", "r3": "rpi5", "g0": "gateway", "g1": "gateway"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def artifact(digest: str) -> Artifact:
    return Artifact(digest=digest, size_bytes=20 * 1024**2, key=f"blobs/sha256/{digest}", signature="sig")


def detail(*, base_bytes: int = 20 * 1024**2, variant_needs: Requirements | None = None) -> ModelDetail:
    onnx = OnnxInfo(ir_version=8, opsets={"": 17}, inputs=[], outputs=[], parameters=0, op_types=[])
    version = ModelVersionRecord(
        name="minilm",
        version="2.0",
        artifact=artifact(BASE).model_copy(update={"size_bytes": base_bytes}),
        onnx=onnx,
        eval_set=EvalSet(digest="e" * 64, size_bytes=100, key="blobs/sha256/" + "e" * 64, samples=4, arrays={}),
        registered_at=T0,
        command_id="c",
    )
    int8 = VariantRecord(
        name="minilm",
        version="2.0",
        variant="int8",
        parent_digest=BASE,
        artifact=artifact(INT8),
        onnx=onnx,
        recipe={"profile": "rpi5", "device_class": "rpi5"},
        requirements=variant_needs or Requirements(min_ram_mb=100),
        registered_at=T0,
        command_id="c",
    )
    return ModelDetail(version=version, variants=[int8], aliases=["candidate"])


class Fleet:
    """The stores, a service on them, and devices that act on their desired states."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.rollouts, self.desired, self.devices = MemoryRolloutStore(), MemoryDesiredStore(), MemoryDeviceStore()
        self.telemetry, self.announcer = MemoryTelemetry(), MemoryAnnouncer()
        huge = detail(base_bytes=4 * 1024**3, variant_needs=Requirements(accelerators=["npu"]))
        self.registry = MemoryRegistry(
            models={("minilm", "2.0"): detail(), ("minilm", "candidate"): detail(), ("minilm", "huge"): huge}
        )
        self.service = self.replica()

    def replica(self) -> RolloutService:
        return RolloutService(
            rollouts=self.rollouts,
            desired=self.desired,
            devices=self.devices,
            registry=self.registry,
            telemetry=self.telemetry,
            announcer=self.announcer,
            clock=self.clock,
        )

    async def enrol(self) -> None:
        for device_id, cls in FLEET.items():
            await self.service.hello(hello(device_id, cls, active_digest=OLD), at=self.clock.now)
            manual = DesiredState(
                device_id=device_id,
                model="minilm",
                version="1.0",
                digest=OLD,
                size_bytes=9,
                signature="s",
                issued_at=T0,
            )
            await self.desired.put(manual, expected_revision=None)

    async def act(self, *, fail: frozenset[str] = frozenset(), report: bool = True) -> None:
        """Every device whose desired state is newer than its last status installs it (or fails)."""
        for device_id, (desired, revision) in (await self.desired.get_many(FLEET)).items():
            record = await self.devices.get(device_id)
            assert record is not None
            last = record[0].last_status
            if last is not None and last.desired_revision == revision:
                continue
            failed = device_id in fail and desired.rollout_id is not None
            status = DeviceStatus(
                device_id=device_id,
                desired_revision=revision,
                digest=desired.digest,
                step="failed" if failed else "active",
                active_digest=record[0].active_digest if failed else desired.digest,
                reason="smoke test failed" if failed else None,
            )
            self.clock.now += timedelta(milliseconds=1)
            await self.service.status(status, at=self.clock.now)
            if report and not failed and desired.rollout_id and desired.wave is not None:
                self.telemetry.reported.setdefault((desired.rollout_id, desired.wave), set()).add(device_id)

    def types(self) -> list[str]:
        return [e.TYPE for e in self.announcer.events.values()]


def start(**fields: Any) -> StartRollout:
    values: dict[str, Any] = {
        "model": "minilm",
        "ref": "candidate",
        "waves": [Wave(percent=50), Wave(percent=100)],
        "gates": [Gate(metric="error_rate", comparator="<=", threshold=0.05)],
        "soak_seconds": 10,
    } | fields
    return StartRollout(**values)


async def run(fleet: Fleet, rollout_id: str, *, fail: frozenset[str] = frozenset(), steps: int = 12) -> str:
    """Reconcile, let the devices act, move the clock past soaks: until the rollout ends."""
    state = ""
    for _ in range(steps):
        decision = await fleet.service.reconcile(rollout_id)
        assert decision is not None
        state = decision.record.state
        if state in ("completed", "rolled_back", "aborted", "paused"):
            return state
        await fleet.act(fail=fail)
        fleet.clock.now += timedelta(seconds=11)
    return state


@pytest.fixture
async def fleet() -> Fleet:
    f = Fleet()
    await f.enrol()
    return f


async def test_a_rollout_completes_in_waves_with_each_class_on_its_artifact(fleet: Fleet) -> None:
    outcome = await fleet.service.start(start(), command_id="cmd-1")
    rollout_id = outcome.result["rollout_id"]
    ((started, _),) = outcome.events
    assert started.targets == 6 and [p.by_class for p in started.plan] == [  # type: ignore[attr-defined]
        {"rpi5": 2, "gateway": 1},
        {"rpi5": 2, "gateway": 1},
    ]
    assert await run(fleet, rollout_id) == "completed"
    desired = await fleet.desired.get_many(FLEET)
    assert {d: s.digest for d, (s, _) in desired.items()} == {
        d: INT8 if c == "rpi5" else BASE for d, c in FLEET.items()
    }
    assert all(s.smoke_input is not None and s.rollout_id == rollout_id for s, _ in desired.values())
    assert fleet.desired.writes == 6 + 6, "six by hand, then each device once"
    # Gates per class and for the wave, twice (two waves), against the devices still on the old model.
    classes = sorted((r.wave, r.device_class or "") for r in fleet.telemetry.requests)
    assert classes == [(w, c) for w in (0, 1) for c in ("", "gateway", "rpi5")]
    assert all(r.baseline_digests == [OLD] for r in fleet.telemetry.requests)
    assert fleet.types().count("wave.completed") == 2 and "rollout.completed" in fleet.types()


async def test_a_failed_gate_reverts_every_touched_device_to_exactly_what_it_had(fleet: Fleet) -> None:
    before = await fleet.desired.get_many(FLEET)
    rollout_id = (await fleet.service.start(start(), command_id="cmd-1")).result["rollout_id"]
    fleet.telemetry.verdict = "Failed"
    assert await run(fleet, rollout_id) == "rolled_back"
    after = await fleet.desired.get_many(FLEET)
    assert {d: s for d, (s, _) in after.items()} == {d: s for d, (s, _) in before.items()}
    record = (await fleet.rollouts.get(rollout_id))[0]  # type: ignore[index]
    assert record.reverted == 3 and record.trigger == "gate" and record.wave == 0


async def test_a_device_that_fails_to_install_fails_the_wave_at_a_full_threshold(fleet: Fleet) -> None:
    rollout_id = (await fleet.service.start(start(install_threshold=1.0), command_id="c")).result["rollout_id"]
    record = (await fleet.rollouts.get(rollout_id))[0]  # type: ignore[index]
    victim = record.waves[0].groups[0].device_ids[0]
    assert await run(fleet, rollout_id, fail=frozenset({victim})) == "rolled_back"
    record = (await fleet.rollouts.get(rollout_id))[0]  # type: ignore[index]
    assert record.trigger == "install" and "1 of 3 devices failed" in (record.reason or "")


async def test_active_devices_that_never_report_telemetry_do_not_advance_the_rollout(fleet: Fleet) -> None:
    rollout_id = (await fleet.service.start(start(), command_id="c")).result["rollout_id"]
    await fleet.service.reconcile(rollout_id)
    await fleet.act(report=False)
    fleet.clock.now += timedelta(seconds=30)
    decision = await fleet.service.reconcile(rollout_id)
    assert decision is not None and decision.record.state == "installing"


async def test_starting_twice_with_one_command_is_one_rollout(fleet: Fleet) -> None:
    first = await fleet.service.start(start(), command_id="cmd-1")
    again = await fleet.service.start(start(), command_id="cmd-1")
    assert again.status == "unchanged" and again.result == first.result
    assert again.events[0][1] == first.events[0][1], "the same rollout.started id: de-duplicated"


async def test_refusals_name_the_reason_and_store_nothing(fleet: Fleet) -> None:
    with pytest.raises(NotFound):
        await fleet.service.start(start(ref="9.9"), command_id="c1")
    with pytest.raises(RolloutRefused, match="selects no device"):
        await fleet.service.start(start(selector=Selector(labels={"site": "mars"})), command_id="c2")
    with pytest.raises(RolloutRefused, match=r"none of the 2 selected devices can run minilm 2\.0: g0: .*RAM.*npu"):
        await fleet.service.start(start(ref="huge", selector=Selector(device_classes=["gateway"])), command_id="c3")
    with pytest.raises(RolloutRefused, match="minilm 2.0 has no variant 'int4'; variants: base, int8"):
        await fleet.service.start(start(variant="int4"), command_id="c6")
    assert await fleet.rollouts.list() == []
    await fleet.service.start(start(), command_id="c4")
    with pytest.raises(RolloutRefused, match="in active rollout ro-c4"):
        await fleet.service.start(start(selector=Selector(device_classes=["rpi5"])), command_id="c5")
    assert [r.rollout_id for r in await fleet.rollouts.list()] == ["ro-c4"]


async def test_commands_pause_resume_and_roll_back(fleet: Fleet) -> None:
    rollout_id = (await fleet.service.start(start(), command_id="c")).result["rollout_id"]
    await fleet.service.reconcile(rollout_id)
    assert (await fleet.service.command(rollout_id, "pause")).result["state"] == "paused"
    await fleet.act()
    assert (await fleet.service.reconcile(rollout_id)).record.state == "paused"  # type: ignore[union-attr]
    assert (await fleet.service.command(rollout_id, "resume")).result["state"] == "installing"
    assert (await fleet.service.command(rollout_id, "rollback", reason="operator")).result["state"] == "rolling_back"
    assert (await fleet.service.reconcile(rollout_id)).record.state == "rolled_back"  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        await fleet.service.command("nope", "pause")


async def test_two_replicas_reconciling_one_rollout_write_each_device_once(fleet: Fleet) -> None:
    rollout_id = (await fleet.service.start(start(), command_id="c")).result["rollout_id"]
    other = fleet.replica()
    for _ in range(12):
        for replica in (fleet.service, other, other, fleet.service):
            decision = await replica.reconcile(rollout_id)
            assert decision is not None
        if decision.record.state == "completed":
            break
        await fleet.act()
        fleet.clock.now += timedelta(seconds=11)
    assert decision.record.state == "completed"
    assert fleet.desired.writes == 6 + 6


async def test_statuses_before_any_hello_are_counted_and_dropped() -> None:
    f = Fleet()
    status = DeviceStatus(device_id="ghost", desired_revision=1, digest=OLD, step="active", active_digest=OLD)
    await f.service.status(status, at=T0)
    assert f.service.statuses_ignored == 1 and await f.devices.get("ghost") is None


async def test_an_assignment_pins_one_variant_and_may_skip_the_smoke_test(fleet: Fleet) -> None:
    """What `slmops device assign --variant base --no-smoke` sends: a one-wave rollout pinned to an artifact."""
    cmd = start(waves=[Wave(percent=100)], gates=[], soak_seconds=0, variant="base", smoke_test=False)
    await fleet.service.start(cmd.model_copy(update={"selector": Selector(device_classes=["rpi5"])}), command_id="a1")
    (record,) = await fleet.rollouts.list()
    assert {a.digest for a in record.artifacts} == {BASE}, "the base model, though rpi5 has its own variant"
    assert record.smoke_input is None
    assert await run(fleet, record.rollout_id) == "completed"


class LoggedRollouts(MemoryRolloutStore):
    def __init__(self, log: list[tuple[str, str]]) -> None:
        super().__init__()
        self.log = log

    async def save_previous_many(self, rollout_id: str, saves: Any) -> None:
        await super().save_previous_many(rollout_id, saves)
        self.log.extend(("save", device_id) for device_id, _ in saves)


class LoggedDesired(MemoryDesiredStore):
    def __init__(self, log: list[tuple[str, str]]) -> None:
        super().__init__()
        self.log = log

    async def put_many(self, writes: Any) -> None:
        await super().put_many(writes)
        self.log.extend(("write", desired.device_id) for desired, _ in writes)


async def test_a_large_wave_saves_each_device_s_previous_state_before_its_write_and_starts_writing_early() -> None:
    fleet = Fleet()
    log: list[tuple[str, str]] = []
    fleet.rollouts, fleet.desired = LoggedRollouts(log), LoggedDesired(log)
    fleet.service = fleet.replica()
    devices = [f"d{i:04d}" for i in range(1200)]
    for device_id in devices:
        await fleet.service.hello(hello(device_id, "rpi5"), at=T0)
    outcome = await fleet.service.start(start(waves=[Wave(percent=100)]), command_id="big")
    await fleet.service.reconcile(outcome.result["rollout_id"])

    position = {entry: i for i, entry in enumerate(log)}
    assert all(position[("save", d)] < position[("write", d)] for d in devices), "saved before written"
    assert {d for kind, d in log if kind == "write"} == set(devices)
    first_write = min(position[("write", d)] for d in devices)
    assert first_write < max(position[("save", d)] for d in devices), "writes start before the last save"
