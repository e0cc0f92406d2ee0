"""One rollout through three faults: kill -9 of the rollout service in wave 1; kill -9 of the
nats-server in wave 2, started again on the same store; kill -9 of the rollout service right after a
rollback command. After each, the rollout resumes where it was: no wave is started twice, no device
is written twice, and no event is published twice (the ids are deterministic, so JetStream
de-duplicates a repeat). Across the server's restart the services and the simulated fleet
reconnect, and the rollout service's watched copies of `desired` and `devices` (shared/kv_cache.py)
notice that their watchers went with the server and watch again.

With 16 devices a revert is written within the command's handling, so the last kill usually lands
after it: what it proves is that the restarted service finds the rollout rolled back, or finishes
the revert, and repeats nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from nats.aio.client import Client

from services.edge_agent.fleet.simulator import FleetSimulator
from shared import bus, topology
from shared.artifacts import ArtifactStore
from shared.messages.device import DesiredState
from shared.messages.rollout import Gate, RollbackRollout, Selector, StartRollout, Wave
from shared.settings import Settings
from shared.stack.servers import ServerProcess, respawn, server_ready
from tests.conftest import ServiceRunner
from tests.integration.test_registry import register
from tests.integration.test_rollout import fleet, inventory_has, record_of, until_state
from tests.support import as_simulator, sample_files, stream_messages, unique

pytestmark = pytest.mark.usefixtures("running_registry", "running_telemetry")


async def writes_by(nc: Client, device_ids: list[str], rollout_id: str) -> dict[str, list[DesiredState]]:
    """Every distinct desired state the rollout wrote to each device (from the KV history)."""
    kv = await nc.jetstream().key_value(topology.KV_DESIRED)
    out: dict[str, list[DesiredState]] = {}
    for device_id in device_ids:
        states = []
        for entry in await kv.history(device_id):
            if entry.value:
                state = DesiredState.model_validate_json(entry.value)
                if state.rollout_id == rollout_id:
                    states.append(state)
        out[device_id] = states
    return out


async def in_wave(nc: Client, rollout_id: str, wave: int) -> None:
    for _ in range(600):
        record = await record_of(nc, rollout_id)
        if record is not None and record.wave == wave and record.state in ("installing", "soaking"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the rollout never reached wave {wave}")


async def restart(server: ServerProcess) -> None:
    """kill -9, then the same command again: same port, same store."""
    server.process.kill()
    server.process = respawn(server).process  # the session's fixture stops whatever runs at the end
    for _ in range(200):
        if await asyncio.to_thread(server_ready, server, timeout=0.5):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the nats-server did not come back")


async def test_a_rollout_survives_kill9_mid_wave_a_nats_server_restart_and_kill9_mid_revert(
    settings: Settings,
    servers: tuple[ServerProcess, ServerProcess],
    running_rollout: ServiceRunner,
    nc: Client,
    artifacts: ArtifactStore,
    tmp_path: Path,
) -> None:
    name = unique("rokill")
    model, eval_set = sample_files(tmp_path, seed=5301)
    assert (await register(nc, artifacts, model, name, "1.0", eval_set=eval_set)).status == "applied"
    config = fleet(16, {"rpi5": 1, "jetson": 1}, "rokill")
    async with FleetSimulator(as_simulator(settings), config) as sim:
        ids = [d.device_id for d in sim.devices]
        await inventory_has(nc, ids)
        rollout_id = unique("kill")
        cmd = StartRollout(
            rollout_id=rollout_id,
            model=name,
            ref="1.0",
            selector=Selector(labels={"fleet": config.id_prefix}),
            waves=[Wave(percent=25), Wave(percent=50), Wave(percent=100)],
            gates=[Gate(metric="error_rate", comparator="<=", threshold=0.05, min_samples=20)],
            soak_seconds=3,
        )
        _, outcome = await bus.send_command(nc, cmd, source="tests", wait=30)
        assert outcome is not None and outcome.status == "applied"

        # Mid-wave: wave 1 has started (its desired states are being written or installed).
        await in_wave(nc, rollout_id, 1)
        running_rollout.kill9()
        await asyncio.to_thread(running_rollout.start)
        await in_wave(nc, rollout_id, 2)
        nats_server, _ = servers
        await restart(nats_server)
        done = await until_state(nc, rollout_id, {"completed", "rolled_back", "paused"}, timeout=120)
        assert done.state == "completed", done.reason

        written = await writes_by(nc, ids, rollout_id)
        assert all(len(states) == 1 for states in written.values()), {d: len(s) for d, s in written.items()}

        # Mid-revert: roll it back and kill the service as soon as it is reverting.
        _, outcome = await bus.send_command(nc, RollbackRollout(rollout_id=rollout_id), source="tests", wait=30)
        assert outcome is not None
        running_rollout.kill9()
        await asyncio.to_thread(running_rollout.start)
        back = await until_state(nc, rollout_id, {"rolled_back"}, timeout=60)
        assert back.reverted == 16 and back.trigger == "manual"
        kv = await nc.jetstream().key_value(topology.KV_DESIRED)
        for device_id in ids:  # they had no desired state before the rollout: none after
            with pytest.raises(Exception):  # noqa: B017 - KeyNotFound or KeyDeleted
                await kv.get(device_id)

    trail = [b for b, _ in await stream_messages(nc, "slmops.evt.>") if b["data"].get("rollout_id") == rollout_id]
    per_id = Counter(b["id"] for b in trail)
    assert max(per_id.values()) == 1, "an event published twice"
    kinds = Counter(b["type"] for b in trail)
    assert kinds["wave.started"] == 3 and kinds["wave.completed"] == 3, kinds
    assert kinds["rollout.completed"] == 1 and kinds["rollout.rolled_back"] == 1, kinds
