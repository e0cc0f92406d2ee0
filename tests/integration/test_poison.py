"""Poison messages through a real nats-server: none of them stops a consumer.

Each case is published the way an attacker or a broken client would (plain nats-py), to a command
subject and to a followed event subject; then the service must still answer its health check and
handle the next good message. Input the consumer receives ends in the DLQ with a reason; input the
server refuses (over a stream's max_msg_size or the server's max_payload) never reaches it.

The server here runs with `max_payload` = the command stream's `max_msg_size`, a configuration an
operator may choose, in which a command of the largest size the stream accepts leaves no room for
the DLQ's headers: the DLQ copy must be cut to fit, or the server closes the service's connection
(what once took the registry off the bus). The last test runs a service as its own process and
shows that a connection the server closes for good ends the process with a non-zero code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from shared import bus, dlq, subjects, topology
from shared.clients import health
from shared.kit import Runtime, ServiceKit
from shared.kit.connection import EXIT_CONNECTION_CLOSED
from shared.messages.common import CommandOutcome
from shared.messages.envelope import MAX_ENVELOPE_BYTES, encode, wrap
from shared.messages.registry import AliasChanged, ModelRegistered, SetAlias
from shared.outcomes import Outcome
from shared.settings import Settings
from shared.stack.servers import ServerProcess, find_executable, free_port, stop_process
from tests.support import stream_messages, unique
from tests.unit.shared.messages.test_contracts import SAMPLES

COMMAND = subjects.command(SetAlias)
EVENT = subjects.event(ModelRegistered)
MAX_PAYLOAD = topology.MESSAGE_MAX_BYTES
WAIT = 20.0  # how long to wait for something that must happen (a bound on a hang, not a timing assertion)


@dataclass
class StandIn:
    """A registry that applies every alias, and a follower that records every event it is handed."""

    aliases: list[str] = field(default_factory=list)
    followed: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    async def set_alias(self, cmd: SetAlias, *, command_id: str) -> Outcome:
        self.aliases.append(cmd.name)
        event = AliasChanged(name=cmd.name, alias=cmd.alias, version=cmd.version, previous=None)
        return Outcome(status="applied", events=[(event, command_id)])

    async def on_registered(self, event: ModelRegistered, *, event_id: str) -> Outcome:
        await self.followed.put(event_id)
        return Outcome(status="unchanged")


def declare_registry(settings: Settings, service: StandIn | None = None) -> ServiceKit[StandIn]:
    stand_in = service or StandIn()

    async def build(runtime: Runtime) -> StandIn:
        return stand_in

    kit = ServiceKit("registry", settings, build=build, description="a stand-in registry")
    kit.commands(topology.REGISTRY_COMMANDS, {SetAlias: StandIn.set_alias})
    kit.emits(AliasChanged)
    return kit


def declare_follower(settings: Settings, service: StandIn) -> ServiceKit[StandIn]:
    async def build(runtime: Runtime) -> StandIn:
        return service

    kit = ServiceKit("optimizer", settings, build=build, description="a stand-in follower of model.registered")
    kit.follows(topology.OPTIMIZER_AUTO, {ModelRegistered: StandIn.on_registered})
    return kit


@pytest.fixture(scope="module")
def strict_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A nats-server whose max_payload is the command stream's max_msg_size, topology created."""
    root = tmp_path_factory.mktemp("poison-nats")
    port, monitor = free_port(), free_port()
    config = root / "nats.conf"
    config.write_text(
        f"listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\nserver_name: poison-{port}\n"
        f"max_payload: {MAX_PAYLOAD}\n"
        f'jetstream {{ store_dir: "{root / "js"}", max_file_store: 8GB }}\n'
    )
    log_path = root / "nats-server.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen([find_executable("nats-server"), "-c", str(config)], stdout=log, stderr=log)
    server = ServerProcess("nats", f"nats://127.0.0.1:{port}", proc, log_path)
    asyncio.run(_initialise(server.url))
    yield server
    stop_process(proc)


async def _initialise(url: str) -> None:
    for _ in range(100):
        try:
            nc = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=0)
            break
        except Exception:
            await asyncio.sleep(0.1)
    else:
        raise RuntimeError(f"nats-server at {url} did not come up")
    try:
        assert nc.max_payload == MAX_PAYLOAD
        await topology.ensure_topology(nc.jetstream())
    finally:
        await nc.close()


@pytest.fixture
def strict_settings(strict_nats: ServerProcess, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, nats_url=strict_nats.url, ack_wait_seconds=2.0, max_deliver=2, otel_exporter="none")


@contextlib.asynccontextmanager
async def serving(settings: Settings, service: StandIn) -> AsyncIterator[Client]:
    async with declare_registry(settings, service).application(), declare_follower(settings, service).application():
        nc = await nats.connect(settings.nats_url, name="attacker")
        try:
            yield nc
        finally:
            await nc.close()


async def still_serving(nc: Client, service: StandIn, name: str) -> None:
    """Health says ready, the next good command is applied and the next good event is handled."""
    assert await health(nc, "registry", timeout=5)
    assert await health(nc, "optimizer", timeout=5)
    _, outcome = await bus.send_command(nc, SetAlias(name=name, alias="stable", version="1"), source="t", wait=WAIT)
    assert outcome is not None and outcome.status == "applied", outcome
    good = wrap(SAMPLES[ModelRegistered.TYPE], source="t")
    await nc.jetstream().publish(EVENT, encode(good), headers={"Nats-Msg-Id": good.id})
    handled: list[str] = []
    while good.id not in handled:  # events published earlier in the test may come first
        handled.append(await asyncio.wait_for(service.followed.get(), WAIT))


def _body_at_the_limit() -> bytes:
    """A valid SetAlias envelope padded with JSON whitespace to exactly MAX_ENVELOPE_BYTES."""
    body = encode(wrap(SetAlias(name="at-limit", alias="stable", version="1"), source="t"))
    return body[:-1] + b" " * (MAX_ENVELOPE_BYTES - len(body)) + b"}"


def _envelope(data: str) -> bytes:
    head = '{"type": "model.alias.set", "schema_version": 1, "id": "p1", "time": "2026-01-01T00:00:00Z", '
    return (head + f'"source": "t", "data": {data}}}').encode()


REJECTED: dict[str, tuple[bytes, str]] = {
    "non-json": (b"not json at all " * 1000, "body is not JSON"),
    "one-over-the-envelope-limit": (_body_at_the_limit()[:-1] + b" }", "over the limit of"),
    "invalid-utf8": (b'{"type": "\xc3\x28"}', "not UTF-8"),
    "deeply-nested": (b"[" * 200_000, "nested too deeply"),
    "nested-past-the-depth-limit": (_envelope('{"name": ' * 40 + '"m"' + "}" * 40), "deeper than"),
    "float-overflow": (_envelope('{"name": "m", "alias": "stable", "version": 1e999}'), "out of range"),
    "huge-integer": (_envelope('{"name": "m", "alias": "stable", "version": ' + "9" * 4000 + "}"), "64-bit"),
    "nan": (_envelope('{"name": NaN, "alias": "stable", "version": "1"}'), "NaN is not a JSON number"),
    "lone-surrogate": (_envelope('{"name": "\\udc80", "alias": "stable", "version": "1"}'), "lone surrogate"),
    "many-invalid-fields": (_envelope(json.dumps({f"x{i}": 1 for i in range(20_000)})), "more problems"),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
async def test_a_poison_command_is_dead_lettered_with_its_reason_and_the_service_carries_on(
    strict_settings: Settings, case: str
) -> None:
    body, reason = REJECTED[case]
    service = StandIn()
    async with serving(strict_settings, service) as nc:
        dead = await nc.subscribe(subjects.dlq("registry"))
        outcome = await _publish_waiting(nc, COMMAND, body)
        assert outcome.status == "rejected" and reason in (outcome.reason or ""), outcome
        entry = await dead.next_msg(timeout=WAIT)
        assert reason in (entry.headers or {})[dlq.REASON]
        assert body.startswith(entry.data)
        await still_serving(nc, service, f"after-{case}")


@pytest.mark.parametrize("case", ["non-json", "invalid-utf8", "deeply-nested", "nan", "lone-surrogate"])
async def test_a_poison_event_is_dead_lettered_by_its_follower_which_carries_on(
    strict_settings: Settings, case: str
) -> None:
    body, reason = REJECTED[case]
    service = StandIn()
    async with serving(strict_settings, service) as nc:
        dead = await nc.subscribe(subjects.dlq("optimizer"))
        await nc.jetstream().publish(EVENT, body)
        entry = await dead.next_msg(timeout=WAIT)
        assert reason in (entry.headers or {})[dlq.REASON] and entry.data == body
        await still_serving(nc, service, f"event-{case}")


async def test_a_command_of_the_servers_max_payload_is_dead_lettered_cut_to_fit(strict_settings: Settings) -> None:
    """The finding itself: the largest message the stream accepts, plus the DLQ's headers, is more
    than the server takes in one message. The copy is cut, says so, and the service stays connected."""
    service = StandIn()
    async with serving(strict_settings, service) as nc:
        dead = await nc.subscribe(subjects.dlq("registry"))
        inbox = nc.new_inbox()
        replies = await nc.subscribe(inbox, max_msgs=1)
        headers = {bus.REPLY_TO: inbox}
        body = b"\x00" * (MAX_PAYLOAD - dlq.header_bytes(headers))
        await nc.jetstream().publish(COMMAND, body, headers=headers)  # exactly max_payload, headers included
        outcome = CommandOutcome.model_validate_json((await replies.next_msg(timeout=WAIT)).data)
        assert outcome.status == "rejected" and "over the limit of" in (outcome.reason or "")
        entry = await dead.next_msg(timeout=WAIT)
        entry_headers = entry.headers or {}
        assert entry_headers[dlq.TRUNCATED] == "true" and entry_headers[dlq.ORIGINAL_SIZE] == str(len(body))
        assert f"first {len(entry.data)} of {len(body)} bytes kept" in entry_headers[dlq.REASON]
        assert 0 < len(entry.data) < len(body) and body.startswith(entry.data)
        await still_serving(nc, service, "after-max-payload")


async def test_a_command_over_the_servers_limits_never_reaches_the_service(strict_settings: Settings) -> None:
    service = StandIn()
    async with serving(strict_settings, service) as nc:
        with pytest.raises(nats.errors.MaxPayloadError):  # ~1 MB: refused by the client library
            await nc.jetstream().publish(COMMAND, b"\x01" * 1_000_000)
        raw = await _raw_connection(strict_settings.nats_url)
        answer = await raw(f"PUB {COMMAND} {MAX_PAYLOAD + 1}\r\n".encode())
        assert b"maximum payload" in answer.lower()  # refused by the server, on the size it announces
        assert service.aliases == []
        await still_serving(nc, service, "after-oversized")


async def test_a_message_exactly_at_the_envelope_limit_is_applied(strict_settings: Settings) -> None:
    service = StandIn()
    async with serving(strict_settings, service) as nc:
        outcome = await _publish_waiting(nc, COMMAND, _body_at_the_limit())
        assert outcome.status == "applied" and service.aliases == ["at-limit"]
        await still_serving(nc, service, "after-at-limit")


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Junk": "j" * 7000},
        {bus.REPLY_TO: "_INBOX." + "a" * 7000},
        {bus.REPLY_TO: "_INBOX.>"},
        {bus.REPLY_TO: "_INBOX.a b"},
        {"traceparent": "00-" + "f" * 5000, "tracestate": "x=" + "y" * 1000},
    ],
    ids=["huge-header", "huge-reply-to", "wildcard-reply-to", "reply-to-with-a-space", "garbage-trace-context"],
)
async def test_hostile_headers_on_a_valid_command_do_not_stop_the_service(
    strict_settings: Settings, headers: dict[str, str]
) -> None:
    service = StandIn()
    async with serving(strict_settings, service) as nc:
        name = unique("h")
        envelope = wrap(SetAlias(name=name, alias="stable", version="1"), source="t")
        await nc.jetstream().publish(COMMAND, encode(envelope), headers=headers)
        await still_serving(nc, service, "after-headers")
        assert name in service.aliases  # handled before the good command that followed it
        announced = [e for e, _ in await stream_messages(nc, subjects.event(AliasChanged)) if e["id"] == envelope.id]
        assert len(announced) == 1


async def test_a_service_whose_connection_is_closed_for_good_exits_non_zero(
    strict_settings: Settings, tmp_path: Path
) -> None:
    """The server closes a connection for good over a protocol error (as it did over the oversized
    DLQ entry); the process must end, not spin without NATS, so that its supervisor restarts it."""
    proxy = await ErrProxy.start(strict_settings.nats_url)
    script = (
        "import asyncio\n"
        "from shared.settings import load_settings\n"
        "from tests.integration.test_poison import declare_registry\n"
        "asyncio.run(declare_registry(load_settings()).app().run())\n"
    )
    env = os.environ | {
        "SLMOPS_HOME": str(tmp_path),
        "SLMOPS_NATS_URL": proxy.url,
        "SLMOPS_OTEL_EXPORTER": "none",
        "SLMOPS_ACK_WAIT_SECONDS": "2",
    }
    log_path = tmp_path / "service.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, env=env, cwd=Path(__file__).resolve().parents[2], stdout=log, stderr=log
        )
    nc = await nats.connect(strict_settings.nats_url)
    try:
        for _ in range(int(WAIT * 10)):
            if await health(nc, "registry", timeout=0.5) or proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
        assert proc.returncode is None and await health(nc, "registry"), "the service did not start"
        proxy.poison()
        code = await asyncio.wait_for(proc.wait(), WAIT)
        logged = log_path.read_text(errors="replace")
        assert code == EXIT_CONNECTION_CLOSED, logged[-2000:]
        assert "closed for good" in logged
        assert not await health(nc, "registry", timeout=1)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await nc.close()
        await proxy.close()


async def _publish_waiting(nc: Client, subject: str, body: bytes) -> CommandOutcome:
    inbox = nc.new_inbox()
    replies = await nc.subscribe(inbox, max_msgs=1)
    await nc.jetstream().publish(subject, body, headers={bus.REPLY_TO: inbox})
    msg: Msg = await replies.next_msg(timeout=WAIT)
    return CommandOutcome.model_validate_json(msg.data)


async def _raw_connection(url: str) -> Any:
    """A bare TCP client speaking the NATS protocol, for what nats-py refuses to send."""
    host, port = url.removeprefix("nats://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    await reader.readline()  # INFO
    writer.write(b'CONNECT {"verbose": false, "pedantic": false}\r\n')

    async def send(data: bytes) -> bytes:
        writer.write(data)
        await writer.drain()
        answer = b""
        with contextlib.suppress(ConnectionError):
            while line := await asyncio.wait_for(reader.readline(), WAIT):
                answer += line
                if line.startswith(b"-ERR"):
                    break
        writer.close()
        return answer

    return send


class ErrProxy:
    """A TCP proxy in front of nats-server that can send every client the server's protocol error
    for an oversized message, which makes nats-py close the connection for good (no reconnect)."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream.removeprefix("nats://").split(":")
        self._clients: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._to_clients: list[asyncio.Task[None]] = []
        self._server: asyncio.Server | None = None
        self.url = ""

    @classmethod
    async def start(cls, upstream: str) -> ErrProxy:
        proxy = cls(upstream)
        proxy._server = await asyncio.start_server(proxy._accept, "127.0.0.1", 0)
        port = proxy._server.sockets[0].getsockname()[1]
        proxy.url = f"nats://127.0.0.1:{port}"
        return proxy

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(self._upstream[0], int(self._upstream[1]))
        self._clients.append(client_w)
        self._tasks.add(asyncio.create_task(self._pipe(client_r, server_w)))
        to_client = asyncio.create_task(self._pipe(server_r, client_w))
        self._tasks.add(to_client)
        self._to_clients.append(to_client)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    def poison(self) -> None:
        """Stop relaying the server (between two reads, so at a protocol boundary for the small
        messages an idle service gets), then send each client the error."""
        for task in self._to_clients:
            task.cancel()
        for writer in self._clients:
            writer.write(b"-ERR 'Maximum Payload Violation'\r\n")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()
