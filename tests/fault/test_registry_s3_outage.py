"""S3 goes away while the registry handles a command: it retries with back-off and succeeds when
S3 returns; if S3 stays away, it gives up after `max_deliver` attempts and dead-letters the command
with the last error. Either way the command is accounted for exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from shared import bus
from shared.artifacts import ArtifactStore
from shared.messages.common import ObjectRef
from shared.messages.registry import RegisterModel
from shared.settings import Settings
from tests.conftest import ServiceRunner
from tests.support import TcpProxy, dlq_entries, sample_files, stream_messages, unique


@pytest.fixture
def registry_behind_proxy(
    settings: Settings, running_registry: ServiceRunner
) -> Iterator[tuple[ServiceRunner, TcpProxy]]:
    """The session registry is swapped for one that reaches S3 through a proxy we can cut."""
    running_registry.stop()
    proxy = TcpProxy(int(settings.s3_endpoint.rsplit(":", 1)[1]))
    runner = ServiceRunner("registry", settings.model_copy(update={"s3_endpoint": proxy.address}))
    runner.log_path = Path(settings.home) / "registry-proxied.log"
    runner.start()
    yield runner, proxy
    runner.stop()
    proxy.down()


async def test_s3_outage_is_retried_then_succeeds(
    registry_behind_proxy: tuple[ServiceRunner, TcpProxy], nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    runner, proxy = registry_behind_proxy
    model, _ = sample_files(tmp_path)
    name = unique("outage")
    staged = artifacts.upload_staging(model)
    proxy.down()
    cmd = RegisterModel(name=name, version="1", artifact=ObjectRef(key=staged.key))
    sending = asyncio.create_task(bus.send_command(nc, cmd, source="tests", wait=60))
    for _ in range(100):
        if "will retry" in runner.log_path.read_text():
            break
        await asyncio.sleep(0.1)
    assert "will retry" in runner.log_path.read_text(), "the outage should have made the first attempt fail"
    proxy.up()
    _, outcome = await sending
    assert outcome is not None and outcome.status == "applied"
    events = [
        e for e, _ in await stream_messages(nc, "slmops.evt.model.registered") if e["data"]["record"]["name"] == name
    ]
    assert len(events) == 1
    assert not artifacts.exists(staged.key)


async def test_s3_outage_that_outlasts_the_retries_dead_letters_the_command(
    registry_behind_proxy: tuple[ServiceRunner, TcpProxy], nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    _, proxy = registry_behind_proxy
    model, _ = sample_files(tmp_path)
    name = unique("gaveup")
    staged = artifacts.upload_staging(model)
    proxy.down()
    cmd = RegisterModel(name=name, version="1", artifact=ObjectRef(key=staged.key))
    _, outcome = await bus.send_command(nc, cmd, source="tests", wait=60)
    assert outcome is not None and outcome.status == "rejected"
    assert (outcome.reason or "").startswith("gave up after 3 attempts") and "unreachable" in (outcome.reason or "")
    (entry,) = await dlq_entries(nc, containing=name)
    assert entry["Slmops-Dlq-Reason"] == outcome.reason
