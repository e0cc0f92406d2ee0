"""The rollout service against the real nats-server and S3 server, with the registry and telemetry
services running and a simulated fleet that really downloads, verifies and installs: a rollout
started by a plain command event completes in class-stratified waves, judged by the telemetry
service; a second one whose gate cannot pass is caught in its first wave and reverted, every touched
device back on exactly the desired state it had."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from nats.aio.client import Client
from typer.testing import CliRunner

from services.edge_agent.fleet.config import SimulationConfig
from services.edge_agent.fleet.simulator import FleetSimulator
from services.rollout.adapters.jetstream import KvRolloutStore
from services.rollout.cli import rollout_app
from shared import bus, topology
from shared.artifacts import ArtifactStore
from shared.clients import RegistryClient
from shared.messages.common import config_digest
from shared.messages.device import DesiredState
from shared.messages.inventory import DeviceRecord
from shared.messages.rollout import Gate, Selector, StartRollout, Wave
from shared.messages.rollout_record import RolloutRecord
from shared.settings import Settings
from tests.conftest import ServiceRunner, service_env
from tests.integration.test_registry import register
from tests.support import as_simulator, sample_files, stream_messages, unique

pytestmark = pytest.mark.usefixtures("running_registry", "running_telemetry", "running_rollout")


async def record_of(nc: Client, rollout_id: str) -> RolloutRecord | None:
    kv = await nc.jetstream().key_value(topology.KV_ROLLOUTS)
    try:
        entry = await kv.get(rollout_id)
    except Exception:  # noqa: BLE001 - not written yet
        return None
    return RolloutRecord.model_validate_json(entry.value or b"")


async def until_state(nc: Client, rollout_id: str, states: set[str], *, timeout: float = 60) -> RolloutRecord:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        record = await record_of(nc, rollout_id)
        if record is not None and record.state in states:
            return record
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"rollout {rollout_id} is {record.state if record else 'missing'}, not {states}")
        await asyncio.sleep(0.2)


async def desired_of(nc: Client, device_ids: list[str]) -> dict[str, DesiredState]:
    kv = await nc.jetstream().key_value(topology.KV_DESIRED)
    out = {}
    for device_id in device_ids:
        entry = await kv.get(device_id)
        out[device_id] = DesiredState.model_validate_json(entry.value or b"")
    return out


def fleet(devices: int, mix: dict[str, float], prefix: str) -> SimulationConfig:
    """A simulated fleet with quick telemetry (1 s windows of ~20 requests) and no local inference."""
    return SimulationConfig(
        devices=devices,
        mix=mix,
        real_inference=0,
        id_prefix=unique(prefix),
        window_seconds=1.0,
        request_rate=20.0,
        measure_requests=50,
    )


async def inventory_has(nc: Client, device_ids: list[str], *, timeout: float = 20) -> None:
    kv = await nc.jetstream().key_value(topology.KV_DEVICES)
    deadline = asyncio.get_running_loop().time() + timeout
    missing = set(device_ids)
    while missing and asyncio.get_running_loop().time() < deadline:
        for device_id in list(missing):
            try:
                await kv.get(device_id)
                missing.discard(device_id)
            except Exception:  # noqa: BLE001 - not folded yet
                pass
        await asyncio.sleep(0.2)
    assert not missing, f"not in the inventory: {sorted(missing)[:5]}"


async def test_a_rollout_completes_in_waves_and_a_bad_one_is_reverted(
    settings: Settings, running_rollout: ServiceRunner, nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    name = unique("rollout")
    for version, seed in (("1.0", 5201), ("2.0", 5202)):
        model, eval_set = sample_files(tmp_path / version, seed=seed)
        assert (await register(nc, artifacts, model, name, version, eval_set=eval_set)).status == "applied"
    registry = RegistryClient(nc, source="tests")
    v1, v2 = (await registry.get_model(name, "1.0")), (await registry.get_model(name, "2.0"))
    config = fleet(12, {"rpi5": 1, "jetson": 1}, "ro")
    selector = Selector(labels={"fleet": config.id_prefix})
    gate = Gate(metric="error_rate", comparator="<=", threshold=0.05, min_samples=20)
    async with FleetSimulator(as_simulator(settings), config) as sim:
        ids = [d.device_id for d in sim.devices]
        await inventory_has(nc, ids)

        good = StartRollout(
            rollout_id=unique("good"),
            model=name,
            ref="1.0",
            selector=selector,
            waves=[Wave(percent=25), Wave(percent=100)],
            gates=[gate],
            soak_seconds=3,
            config={"lang": "de", "limits": {"max_tokens": 64}},
        )
        _, outcome = await bus.send_command(nc, good, source="tests", wait=30)
        assert outcome is not None and outcome.status == "applied", outcome
        done = await until_state(nc, good.rollout_id or "", {"completed", "rolled_back", "paused"}, timeout=90)
        assert done.state == "completed", done.reason
        assert [len(w.devices) for w in done.waves] == [4, 8]
        assert [sorted(set(w.classes.values())) for w in done.waves] == [["jetson", "rpi5"]] * 2, "a canary per class"
        assert {g.device_class for w in done.waves for g in w.gates} == {None, "rpi5", "jetson"}
        assert await sim.wait_until(lambda: len(sim.converged_on(v1.version.artifact.digest)) == 12, timeout=20)
        before = await desired_of(nc, ids)
        assert all(s.rollout_id == good.rollout_id and s.config == good.config for s in before.values())
        settings_digest = config_digest(good.config or {})
        assert {d.config_digest for d in sim.devices} == {settings_digest}, "the settings serve with the model"
        assert sim.config_digests.computed == 1, "hashed once for the whole fleet"

        bad = good.model_copy(
            update={
                "rollout_id": unique("bad"),
                "ref": "2.0",
                "gates": [Gate(metric="latency_p50_ms", comparator="<=", threshold=0.0001, min_samples=20)],
                "config": {"lang": "xx"},
            }
        )
        _, outcome = await bus.send_command(nc, bad, source="tests", wait=30)
        assert outcome is not None and outcome.status == "applied", outcome
        reverted = await until_state(nc, bad.rollout_id or "", {"rolled_back", "completed", "paused"}, timeout=90)
        assert reverted.state == "rolled_back" and reverted.trigger == "gate" and reverted.wave == 0
        assert reverted.reverted == 4, "the first wave's devices, and only they"
        assert await desired_of(nc, ids) == before, "every device back on exactly the desired state it had"
        assert await sim.wait_until(lambda: len(sim.converged_on(v1.version.artifact.digest)) == 12, timeout=20)
        assert v2.version.artifact.digest not in {d.active_digest for d in sim.devices}
        assert {d.config_digest for d in sim.devices} == {settings_digest}, "the old settings are back too"

    # The audit trail, on the events stream.
    trail = [
        (b["type"], b["data"])
        for b, _ in await stream_messages(nc, "slmops.evt.>")
        if b["data"].get("rollout_id") == bad.rollout_id
    ]
    kinds = [t for t, _ in trail]
    assert kinds[0] == "rollout.started" and kinds[-1] == "rollout.state_changed"
    assert {"wave.started", "gate.verdict", "wave.completed", "rollout.rolled_back"} <= set(kinds)
    (rolled,) = [d for t, d in trail if t == "rollout.rolled_back"]
    assert (rolled["devices"], rolled["trigger"]) == (4, "gate")


async def test_the_cli_plans_starts_shows_and_rolls_back(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """`slmops rollout start --dry-run` prints the plan and changes nothing; `start` runs it,
    `show`/`list` read it, `rollback` puts the devices back, all through the bus like any system."""
    for key, value in service_env(settings).items():
        if key.startswith("SLMOPS_"):
            monkeypatch.setenv(key, value)
    name = unique("rocli")
    model, eval_set = sample_files(tmp_path, seed=5203)
    assert (await register(nc, artifacts, model, name, "1.0", eval_set=eval_set)).status == "applied"
    config = fleet(6, {"rpi5": 1, "gateway": 1}, "rocli")

    def cli(*args: str) -> str:
        result = CliRunner().invoke(rollout_app, list(args))
        assert result.exit_code == 0, result.output
        return result.stdout

    async with FleetSimulator(as_simulator(settings), config) as sim:
        ids = [d.device_id for d in sim.devices]
        await inventory_has(nc, ids)
        select = ["--label", f"fleet={config.id_prefix}"]
        plan = json.loads(
            await asyncio.to_thread(cli, "start", name, "1.0", *select, "--waves", "50,100", "--dry-run", "--json")
        )
        assert [len(w["devices"]) for w in plan["waves"]] == [4, 2] and plan["excluded"] == []
        assert [w["by_class"] for w in plan["waves"]] == [{"gateway": 2, "rpi5": 2}, {"gateway": 1, "rpi5": 1}]
        assert [r for r in await KvRolloutStore(nc.jetstream()).list() if r.model == name] == [], "nothing stored"

        rollout_id = unique("rocli")
        settings_file = tmp_path / "settings.json"
        settings_file.write_text(json.dumps({"site": "lab", "threshold": 0.8}))
        started = json.loads(
            await asyncio.to_thread(
                cli,
                "start",
                name,
                "1.0",
                *select,
                "--waves",
                "50,100",
                "--soak",
                "3s",
                "--gate",
                "error_rate<=0.05@10",
                "--id",
                rollout_id,
                "--config",
                str(settings_file),
                "--json",
            )
        )
        assert started["status"] == "applied" and started["result"]["rollout_id"] == rollout_id
        done = await until_state(nc, rollout_id, {"completed", "rolled_back", "paused"}, timeout=90)
        assert done.state == "completed", done.reason
        shown = json.loads(await asyncio.to_thread(cli, "show", rollout_id, "--json"))
        assert shown["state"] == "completed" and len(shown["waves"]) == 2
        assert shown["device_states"] == {"0": {"active": 4}, "1": {"active": 2}}, "every device active on its write"
        assert {d.config_digest for d in sim.devices} == {config_digest({"site": "lab", "threshold": 0.8})}
        devices = await nc.jetstream().key_value(topology.KV_DEVICES)
        records = [DeviceRecord.model_validate_json((await devices.get(d)).value or b"") for d in ids]
        assert {r.active_config_digest for r in records} == {config_digest({"site": "lab", "threshold": 0.8})}
        assert rollout_id in {r["rollout_id"] for r in json.loads(await asyncio.to_thread(cli, "list", "--json"))}
        trail = [e["type"] for e in json.loads(await asyncio.to_thread(cli, "history", rollout_id, "--json"))]
        assert trail[0] == "rollout.started" and "rollout.completed" in trail and trail.count("wave.started") == 2
        assert "history of" in await asyncio.to_thread(cli, "history", rollout_id)

        await asyncio.to_thread(cli, "rollback", rollout_id, "--reason", "testing the revert")
        back = await until_state(nc, rollout_id, {"rolled_back"}, timeout=30)
        assert back.trigger == "manual" and back.reverted == 6
        kv = await nc.jetstream().key_value(topology.KV_DESIRED)
        for device_id in ids:
            with pytest.raises(Exception):  # noqa: B017 - KeyNotFound / KeyDeleted: no desired state before
                await kv.get(device_id)
