"""The intake against a real nats-server of its own: a command on a subject no service reads ends in
the DLQ with the reason, leaves the stream, and its waiting sender is told. (Invalid device reports:
tests/integration/test_rollout_reports.py and tests/integration/test_telemetry.py.)

The server is this module's own, so the sweep never touches the commands other tests leave in the
session's stream, and no optimizer runs on it (its command family is "not installed" here).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from services.intake.app import declare
from services.intake.settings import IntakeSettings
from shared import bus, topology
from shared.messages.common import CommandOutcome
from shared.stack.servers import ServerProcess, free_port, start_nats
from tests.support import dlq_entries

DIGEST = "ab" * 32


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("intake-nats")
    server = start_nats(port=free_port(), store_dir=root / "js", log_dir=root)
    yield server
    server.stop()


@pytest.fixture
async def nc(own_nats: ServerProcess, tmp_path: Path) -> AsyncIterator[Client]:
    """A connection to the intake's server while the intake runs (in this process, as
    `slmops service run intake` would run it: the kit's app from its declarations)."""
    settings = IntakeSettings(
        home=tmp_path,
        nats_url=own_nats.url,
        ack_wait_seconds=3.0,
        max_deliver=3,
        otel_exporter="none",
        intake_sweep_seconds=0.2,
        intake_grace_seconds=0,
    )
    client = await bus.connect(settings, name="intake-tests")
    try:
        await topology.ensure_topology(client.jetstream())  # what `slmops up` does before any service starts
        async with declare(settings).application():
            yield client
    finally:
        await client.close()


async def command_rejection(nc: Client, subject: str, body: bytes) -> CommandOutcome:
    """Publish `body` on `subject` as a waiting sender does, and return the outcome it is told."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.jetstream().publish(subject, body, headers={bus.REPLY_TO: inbox})
        reply = await sub.next_msg(timeout=15)
    finally:
        await sub.unsubscribe()
    return CommandOutcome.model_validate_json(reply.data)


async def held_on(js: JetStreamContext, subject: str) -> int:
    info = await js.stream_info(topology.CMDS_STREAM, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def test_a_command_on_a_subject_no_service_reads_is_dead_lettered_and_leaves_the_stream(nc: Client) -> None:
    js = nc.jetstream()
    marker = uuid.uuid4().hex
    body = json.dumps({"type": "model.regster", "id": f"c-{marker}"}).encode()

    outcome = await command_rejection(nc, "slmops.cmd.modle.register", body)

    reason = "no service handles slmops.cmd.modle.register: no command consumer's filter covers it"
    assert (outcome.command_id, outcome.status) == (f"c-{marker}", "rejected")
    assert (outcome.reason or "").startswith(reason)
    (entry,) = await dlq_entries(nc, containing=marker)
    assert entry["Slmops-Dlq-Subject"] == "slmops.cmd.modle.register" and entry["Slmops-Dlq-Reason"].startswith(reason)
    assert entry["_body"] == body.decode()
    assert await held_on(js, "slmops.cmd.modle.register") == 0


async def test_a_command_whose_service_is_not_installed_is_dead_lettered_and_one_a_consumer_reads_is_left(
    nc: Client,
) -> None:
    js = nc.jetstream()
    await topology.ensure_consumer(js, topology.REGISTRY_COMMANDS)  # a registry that is installed, but down
    kept = await js.publish("slmops.cmd.model.register", b'{"kept": true}')

    outcome = await command_rejection(nc, "slmops.cmd.optimize.request", b'{"id": "opt-1"}')

    assert outcome.reason == (
        "no service handles slmops.cmd.optimize.request: its consumer optimizer-commands (slmops.cmd.optimize.>) "
        "has not been on the server for 0 s; is that service installed?"
    )
    # That sweep saw the registry's command too (it was stored first), and left it for the registry.
    assert await held_on(js, "slmops.cmd.model.register") == 1
    assert (await js.get_msg(topology.CMDS_STREAM, kept.seq)).data == b'{"kept": true}'
