"""The service kit against a real nats-server, with a stand-in service whose use cases do what each
test needs: how commands are settled (applied, rejected, retried, given up), how requests are answered
(every error branch arrives at the client as its class), and what start-up refuses.

The kit runs in this process on a server of its own, so it never competes with the session's
registry for the `registry-commands` consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig

from shared import bus, topology
from shared.clients import RegistryClient, health
from shared.errors import InvalidRequest, NotFound, SlmopsError, TransientError
from shared.kit import Runtime, ServiceKit
from shared.messages.common import ObjectRef
from shared.messages.envelope import deterministic_id
from shared.messages.registry import (
    GET_MODEL,
    LIST_MODELS,
    AliasChanged,
    ModelSummary,
    RegisterModel,
    SetAlias,
)
from shared.outcomes import Outcome
from shared.settings import Settings
from shared.stack.servers import ServerProcess, free_port, start_nats
from tests.support import dlq_entries, stream_messages


@dataclass
class StandIn:
    """Use cases that behave as each test sets them up, and count their calls."""

    calls: dict[str, int] = field(default_factory=dict)
    transient_failures: int = 0

    async def set_alias(self, cmd: SetAlias, *, command_id: str) -> Outcome:
        self.calls[cmd.alias] = self.calls.get(cmd.alias, 0) + 1
        if cmd.alias == "missing":
            raise NotFound(f"no version {cmd.version}")
        if cmd.alias == "flaky" and self.calls[cmd.alias] <= self.transient_failures:
            raise TransientError("S3 is down")
        if cmd.alias == "buggy":
            raise RuntimeError("a bug")
        event = AliasChanged(name=cmd.name, alias=cmd.alias, version=cmd.version, previous=None)
        return Outcome(status="applied", events=[(event, deterministic_id("alias.changed", command_id))])

    async def register(self, cmd: RegisterModel, *, command_id: str) -> Outcome:
        # Announces an event the service never declared: a programming error the kit must refuse.
        event = AliasChanged(name=cmd.name, alias="x", version=cmd.version, previous=None)
        undeclared = SetAlias(name=cmd.name, alias="x", version=cmd.version)
        return Outcome(status="applied", events=[(event, "e1")], commands=[(undeclared, "c1")])


async def answer_get(service: StandIn, request: Any) -> Any:
    errors: dict[str, SlmopsError | Exception] = {
        "missing": NotFound("no model named 'missing'"),
        "bad": InvalidRequest("ref is malformed"),
        "down": TransientError("S3 is down"),
        "bug": RuntimeError("a bug"),
    }
    raise errors[request.name]


async def answer_list(service: StandIn, request: Any) -> Any:
    if request.name == "not-a-list":  # a bug: a result that is not the declared reply type
        return ModelSummary(name="tiny", versions=["1.0"], aliases={}, latest="1.0")
    return [ModelSummary(name="tiny", versions=["1.0"], aliases={"stable": "1.0"}, latest="1.0")]


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("kit-nats")
    server = start_nats(port=free_port(), store_dir=root / "js", log_dir=root)
    asyncio.run(_create_topology(server.url))  # the admin's job: a service only checks it exists
    yield server
    server.stop()


async def _create_topology(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await topology.ensure_topology(nc.jetstream())
    finally:
        await nc.close()


def declare(settings: Settings, service: StandIn) -> ServiceKit[StandIn]:
    async def build(runtime: Runtime) -> StandIn:
        return service

    kit = ServiceKit("registry", settings, build=build, description="a stand-in registry")
    kit.commands(topology.REGISTRY_COMMANDS, {SetAlias: StandIn.set_alias, RegisterModel: StandIn.register})
    kit.rpc(GET_MODEL, answer_get)
    kit.rpc(LIST_MODELS, answer_list)
    kit.emits(AliasChanged)
    return kit


@contextlib.asynccontextmanager
async def running(settings: Settings, service: StandIn) -> AsyncIterator[Client]:
    app = declare(settings, service).application()
    async with app:
        nc = await bus.connect(settings, name="kit-tests")
        try:
            yield nc
        finally:
            await nc.close()


@pytest.fixture
def kit_settings(own_nats: ServerProcess, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, nats_url=own_nats.url, ack_wait_seconds=2.0, max_deliver=2, otel_exporter="none")


async def test_an_applied_command_announces_its_events_and_replies(kit_settings: Settings) -> None:
    async with running(kit_settings, StandIn()) as nc:
        command_id, outcome = await bus.send_command(
            nc, SetAlias(name="m", alias="stable", version="1"), source="tests", wait=10
        )
        assert outcome is not None and outcome.status == "applied" and outcome.command_id == command_id
        events = [e for e, h in await stream_messages(nc, "slmops.evt.alias.changed") if e["data"]["alias"] == "stable"]
        assert [e["id"] for e in events] == [deterministic_id("alias.changed", command_id)]


async def test_a_caller_error_is_dead_lettered_once_and_never_retried(kit_settings: Settings) -> None:
    service = StandIn()
    async with running(kit_settings, service) as nc:
        _, outcome = await bus.send_command(nc, SetAlias(name="m1", alias="missing", version="9"), source="t", wait=10)
        assert outcome is not None and outcome.status == "rejected" and "no version 9" in (outcome.reason or "")
        (entry,) = await dlq_entries(nc, containing='"m1"')
        assert entry["Slmops-Dlq-Service"] == "registry" and "no version 9" in entry["Slmops-Dlq-Reason"]
        assert service.calls["missing"] == 1


async def test_bytes_that_are_no_accepted_command_get_the_decoder_reason(kit_settings: Settings) -> None:
    async with running(kit_settings, StandIn()) as nc:
        js = nc.jetstream()
        await js.publish("slmops.cmd.model.register", b"not json at all \xff")
        await js.publish("slmops.cmd.model.list", b'{"type": "registry.list"}')
        reasons: list[str] = []
        for _ in range(40):
            reasons = [e["Slmops-Dlq-Reason"] for e in await dlq_entries(nc, containing="")]
            if len(reasons) >= 2:
                break
            await asyncio.sleep(0.25)
        assert any(r.startswith("body is not JSON") for r in reasons), reasons
        assert any(r.startswith("not a valid envelope") for r in reasons), reasons


async def test_a_transient_failure_is_retried_until_it_succeeds(kit_settings: Settings) -> None:
    service = StandIn(transient_failures=1)
    async with running(kit_settings, service) as nc:
        _, outcome = await bus.send_command(nc, SetAlias(name="m2", alias="flaky", version="1"), source="t", wait=15)
        assert outcome is not None and outcome.status == "applied"
        assert service.calls["flaky"] == 2


async def test_a_bug_is_retried_max_deliver_times_then_dead_lettered(kit_settings: Settings) -> None:
    service = StandIn()
    async with running(kit_settings, service) as nc:
        _, outcome = await bus.send_command(nc, SetAlias(name="m3", alias="buggy", version="1"), source="t", wait=15)
        assert outcome is not None and outcome.status == "rejected"
        assert (outcome.reason or "").startswith("gave up after 2 attempts: RuntimeError: a bug")
        assert service.calls["buggy"] == 2


async def test_publishing_what_the_service_did_not_declare_is_refused_whole(kit_settings: Settings) -> None:
    async with running(kit_settings, StandIn()) as nc:
        cmd = RegisterModel(name="m4", version="1", artifact=ObjectRef(key="k"))
        _, outcome = await bus.send_command(nc, cmd, source="t", wait=15)
        assert outcome is not None and outcome.status == "rejected"
        assert "sends 'model.alias.set' without declaring it with sends()" in (outcome.reason or "")
        announced = [e for e, _ in await stream_messages(nc, "slmops.evt.alias.changed") if e["data"]["name"] == "m4"]
        assert announced == [], "the declared event of a refused outcome must not be published either"


async def test_every_error_branch_reaches_the_client_as_its_class(kit_settings: Settings) -> None:
    async with running(kit_settings, StandIn()) as nc:
        registry = RegistryClient(nc, source="tests", timeout=5)
        assert await health(nc, "registry")
        assert (await registry.list_models())[0].aliases == {"stable": "1.0"}
        with pytest.raises(NotFound, match=r"^no model named 'missing'$") as missing:
            await registry.get_model("missing")
        assert missing.value.remote_code == "not_found"
        with pytest.raises(InvalidRequest, match=r"^ref is malformed$"):
            await registry.get_model("bad")
        with pytest.raises(TransientError, match=r"^S3 is down$"):
            await registry.get_model("down")
        with pytest.raises(SlmopsError, match=r"^registry failed on get: RuntimeError$") as bug:
            await registry.get_model("bug")
        assert type(bug.value) is SlmopsError and bug.value.remote_code == "internal"
        with pytest.raises(SlmopsError, match=r"^registry failed on list: ValidationError$"):
            await registry.list_models("not-a-list")
        reply = await nc.request(GET_MODEL.subject, b'{"type": "registry.get"}', timeout=5)
        assert GET_MODEL.reply_model.model_validate_json(reply.data).error.code == "invalid_request"  # type: ignore[union-attr]


async def test_start_up_refuses_a_consumer_the_server_holds_with_another_filter(kit_settings: Settings) -> None:
    nc = await bus.connect(kit_settings)
    try:
        js = nc.jetstream()
        await topology.ensure_topology(js)
        with contextlib.suppress(Exception):
            await js.delete_consumer(topology.CMDS_STREAM, topology.REGISTRY_COMMANDS.durable)
        stray = ConsumerConfig(durable_name="registry-commands", filter_subject="slmops.cmd.model.register")
        await js.add_consumer(topology.CMDS_STREAM, stray)
        with pytest.raises(
            topology.TopologyConflict, match="filter_subject is slmops.cmd.model.register on the server"
        ):
            async with running(kit_settings, StandIn()):
                pass
    finally:
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_consumer(topology.CMDS_STREAM, topology.REGISTRY_COMMANDS.durable)
        await nc.close()
