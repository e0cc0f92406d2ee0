"""kill -9 the registry while commands are in flight: after a restart every command is applied
exactly once (one record, one event each) and none is lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nats.aio.client import Client

from shared import bus
from shared.artifacts import ArtifactStore
from shared.clients import RegistryClient
from shared.messages.common import ObjectRef
from shared.messages.registry import RegisterModel
from tests.conftest import ServiceRunner
from tests.support import sample_files, stream_messages, unique

COMMANDS = 24


async def test_kill9_mid_stream_loses_and_duplicates_nothing(
    running_registry: ServiceRunner, nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    name = unique("kill")
    models = [sample_files(tmp_path / str(i), seed=100 + i)[0] for i in range(COMMANDS)]
    staged = [artifacts.upload_staging(m) for m in models]
    ids = []
    for i, obj in enumerate(staged):
        cmd_id, _ = await bus.send_command(
            nc, RegisterModel(name=name, version=f"1.{i}", artifact=ObjectRef(key=obj.key)), source="tests"
        )
        ids.append(cmd_id)

    # Let the registry get part-way through the queue, then kill it without warning.
    for _ in range(200):
        done = await _registered_versions(nc, name)
        if len(done) >= 3:
            break
        await asyncio.sleep(0.02)
    running_registry.kill9()
    info = await nc.jetstream().consumer_info("SLMOPS_CMDS", "registry-commands")
    in_flight = info.num_pending + info.num_ack_pending
    assert 0 < in_flight < COMMANDS, f"kill must land mid-stream (in flight: {in_flight}); the test proved nothing"

    await asyncio.to_thread(running_registry.start)
    # Done means the work queue is drained: a command the killed process held is redelivered
    # only after ack_wait, even if its record was already written before the kill.
    js = nc.jetstream()
    for _ in range(600):
        info = await js.consumer_info("SLMOPS_CMDS", "registry-commands")
        if info.num_pending == 0 and info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.1)

    versions = await _registered_versions(nc, name)
    assert sorted(versions) == sorted(f"1.{i}" for i in range(COMMANDS))
    events = [
        e for e, _ in await stream_messages(nc, "slmops.evt.model.registered") if e["data"]["record"]["name"] == name
    ]
    per_version: dict[str, int] = {}
    for e in events:
        per_version[e["data"]["record"]["version"]] = per_version.get(e["data"]["record"]["version"], 0) + 1
    assert per_version == {f"1.{i}": 1 for i in range(COMMANDS)}, "each command must be announced exactly once"
    assert sorted(e["data"]["record"]["command_id"] for e in events) == sorted(ids)
    assert not [o for o in staged if artifacts.exists(o.key)], "every staging upload is consumed"


async def _registered_versions(nc: Client, name: str) -> list[str]:
    try:
        models = await RegistryClient(nc, source="tests", timeout=2).list_models(name)
    except bus.BusError:
        return []
    return models[0].versions if models else []
