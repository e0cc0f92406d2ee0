"""Least privilege, proven by trying: each identity connects with its own credentials to the real
nats-server and every rule of `shared.auth.permissions` is shown refused by the server itself.

A refused publish or subscription is reported by the server as an asynchronous
`Permissions Violation` error on the connection; `Probe` collects those. Every refusal test also
shows that the same identity's allowed operation works, so a refusal cannot be a broken connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from shared import bus, subjects, topology
from shared.auth import permissions, updates
from shared.auth.authority import Authority
from shared.clients import RegistryClient, health
from shared.errors import Forbidden
from shared.messages.envelope import encode, wrap
from shared.messages.registry import ModelDetail
from shared.settings import Settings
from tests.integration.test_registry import register
from tests.support import sample_files, unique

pytestmark = pytest.mark.usefixtures("servers")


@dataclass
class Probe:
    """A connection as one identity, with the server's permission errors collected."""

    nc: Client
    errors: list[str] = field(default_factory=list)

    async def refused(self, subject: str, *, timeout: float = 3.0) -> bool:
        """Wait until the server reports a permissions violation naming `subject`."""
        await self.nc.flush()
        for _ in range(int(timeout / 0.05)):
            # nats-py lower-cases the server's message, subject included
            if any("permissions violation" in e.lower() and subject.lower() in e.lower() for e in self.errors):
                return True
            await asyncio.sleep(0.05)
        return False

    async def publish_refused(self, subject: str, payload: bytes = b"{}") -> bool:
        await self.nc.publish(subject, payload)
        return await self.refused(subject)

    async def subscribe_refused(self, subject: str) -> bool:
        await self.nc.subscribe(subject)
        return await self.refused(subject)


@contextlib.asynccontextmanager
async def connected(settings: Settings, creds: Path) -> AsyncIterator[Probe]:
    probe = Probe(nc=None)  # type: ignore[arg-type]

    async def on_error(exc: Exception) -> None:
        probe.errors.append(str(exc))

    options = bus.credentials_options(settings.model_copy(update={"nats_creds": creds}))
    probe.nc = await nats.connect(settings.nats_url, error_cb=on_error, max_reconnect_attempts=0, **options)
    try:
        yield probe
    finally:
        await probe.nc.close()


def issue(authority: Authority, tmp_path: Path, role: permissions.Role, name: str) -> Path:
    path = tmp_path / f"{role}-{name}.creds"
    path.write_text(authority.issue(role, name, rotate=True))
    return path


@pytest.fixture
def device(authority: Authority, tmp_path: Path) -> tuple[str, Path]:
    device_id = unique("dev")
    return device_id, issue(authority, tmp_path, "device", device_id)


@pytest.fixture
def operator(authority: Authority, tmp_path: Path) -> Path:
    return issue(authority, tmp_path, "operator", unique("op"))


def hello(device_id: str) -> bytes:
    from services.edge_agent.agent import AgentConfig
    from services.edge_agent.agent import hello as agent_hello
    from services.edge_agent.capabilities import detect

    config = AgentConfig(device_id=device_id, device_class="rpi5", registry_key_pem="", state_dir=Path("."))
    return encode(wrap(agent_hello(config, detect(), active_digest=None), source=f"device:{device_id}"))


# --- a device -------------------------------------------------------------------------------------


async def test_a_device_publishes_its_own_reports_and_no_other_devices(
    settings: Settings, device: tuple[str, Path]
) -> None:
    device_id, creds = device
    async with connected(settings, creds) as probe:
        ack = await probe.nc.jetstream().publish(subjects.device_hello(device_id), hello(device_id))
        assert ack.stream == topology.DEVICE_STREAM
        other = unique("dev")
        for subject in (subjects.device_hello(other), subjects.device_status(other), subjects.telemetry(other)):
            assert await probe.publish_refused(subject), subject


async def test_a_device_sends_no_commands_events_or_other_requests(
    settings: Settings, device: tuple[str, Path]
) -> None:
    device_id, creds = device
    async with connected(settings, creds) as probe:
        for subject in (
            "slmops.cmd.model.register",
            "slmops.cmd.rollout.start",
            "slmops.evt.model.registered",
            "slmops.dlq.registry",
            "slmops.rpc.registry.list",
            "slmops.rpc.registry.get",
            "slmops.rpc.registry.public_key",
            "slmops.rpc.registry.download_url",  # the bare subject: operators', which serves any digest
            f"slmops.rpc.registry.download_url.{unique('dev')}",  # another device's
        ):
            assert await probe.publish_refused(subject), subject


async def test_a_device_reads_only_its_own_desired_key(
    settings: Settings, device: tuple[str, Path], nc: Client
) -> None:
    from services.edge_agent.link import get_desired

    device_id, creds = device
    other = unique("dev")
    async with connected(settings, creds) as probe:
        assert await get_desired(probe.nc, device_id) is None  # allowed: its own key (empty yet)
        for subject in (
            f"$JS.API.DIRECT.GET.KV_desired.$KV.desired.{other}",
            "$JS.API.DIRECT.GET.KV_desired",  # by sequence or by subject in the body: any key
            "$JS.API.STREAM.MSG.GET.KV_desired",
            "$JS.API.CONSUMER.CREATE.KV_desired",  # a watcher on the whole bucket
            f"$KV.desired.{device_id}",  # writing its own desired state
        ):
            assert await probe.publish_refused(subject), subject
        for subject in (f"$KV.desired.{other}", "$KV.desired.>", "_INBOX.>", f"_INBOX.device.{other}.>"):
            assert await probe.subscribe_refused(subject), subject


async def test_a_device_touches_no_other_jetstream_api_and_acks_nothing(
    settings: Settings, device: tuple[str, Path]
) -> None:
    _, creds = device
    async with connected(settings, creds) as probe:
        for subject in (
            "$JS.API.INFO",
            "$JS.API.STREAM.NAMES",
            f"$JS.API.STREAM.INFO.{topology.EVENTS_STREAM}",
            f"$JS.API.STREAM.DELETE.{topology.EVENTS_STREAM}",
            f"$JS.API.CONSUMER.CREATE.{topology.EVENTS_STREAM}",
            f"$JS.API.CONSUMER.MSG.NEXT.{topology.CMDS_STREAM}.registry-commands",
            f"$JS.ACK.{topology.CMDS_STREAM}.registry-commands.1.1.1.1.0",
        ):
            assert await probe.publish_refused(subject), subject
        for subject in ("slmops.>", "slmops.evt.>", "slmops.rpc.registry.>", "$JS.API.>"):
            assert await probe.subscribe_refused(subject), subject


async def _registered(nc: Client, artifacts: object, tmp_path: Path) -> ModelDetail:
    model, eval_set = sample_files(tmp_path, seed=71)
    name = unique()
    await register(nc, artifacts, model, name, "1.0.0", eval_set=eval_set)  # type: ignore[arg-type]
    return await RegistryClient(nc, source="tests").get_model(name, "1.0.0")


@pytest.mark.usefixtures("running_registry")
async def test_a_device_gets_download_urls_only_for_what_its_desired_state_names(
    settings: Settings, device: tuple[str, Path], nc: Client, artifacts: object, tmp_path: Path
) -> None:
    from shared.messages.device import DesiredState, SmokeInput

    device_id, creds = device
    detail = await _registered(nc, artifacts, tmp_path)
    digest = detail.version.artifact.digest
    assert detail.version.eval_set is not None
    async with connected(settings, creds) as probe:
        client = RegistryClient(probe.nc, source=f"device:{device_id}", device_id=device_id)
        with pytest.raises(Forbidden, match="does not name"):
            await client.download_url(digest)
        desired = DesiredState(
            device_id=device_id,
            model=detail.version.name,
            version=detail.version.version,
            digest=digest,
            size_bytes=detail.version.artifact.size_bytes,
            signature=detail.version.artifact.signature,
            smoke_input=SmokeInput(
                digest=detail.version.eval_set.digest, size_bytes=detail.version.eval_set.size_bytes
            ),
            issued_at=datetime.now(UTC),
        )
        kv = await nc.jetstream().key_value(topology.KV_DESIRED)
        await kv.put(device_id, desired.model_dump_json().encode())
        assert (await client.download_url(digest)).digest == digest
        assert (await client.download_url(detail.version.eval_set.digest)).digest == detail.version.eval_set.digest
        # Another device, whose desired state names nothing, is refused the same digest.
        other = unique("dev")
        async with connected(settings, issue(Authority(settings.auth_dir), tmp_path, "device", other)) as stranger:
            with pytest.raises(Forbidden):
                await RegistryClient(stranger.nc, source="x", device_id=other).download_url(digest)


async def test_a_revoked_device_is_disconnected_and_refused(
    settings: Settings, authority: Authority, device: tuple[str, Path]
) -> None:
    device_id, creds = device
    async with connected(settings, creds) as probe:
        await probe.nc.jetstream().publish(subjects.device_hello(device_id), hello(device_id))
        authority.revoke("device", device_id)
        await updates.push_account(settings.nats_url, authority)
        for _ in range(60):
            if probe.nc.is_closed or not probe.nc.is_connected:
                break
            await asyncio.sleep(0.05)
        assert not probe.nc.is_connected, "the server kept a revoked device connected"
    refusals: list[str] = []

    async def on_error(exc: Exception) -> None:
        refusals.append(str(exc))

    options = bus.credentials_options(settings.model_copy(update={"nats_creds": creds}))
    with pytest.raises((TimeoutError, nats.errors.Error)):
        await asyncio.wait_for(
            nats.connect(settings.nats_url, error_cb=on_error, allow_reconnect=False, connect_timeout=2, **options),
            timeout=10,
        )
    assert any("authorization violation" in r.lower() for r in refusals), refusals


# --- the operator -----------------------------------------------------------------------------


async def test_the_operator_sends_commands_and_reads_state(settings: Settings, operator: Path) -> None:
    async with connected(settings, operator) as probe:
        js = probe.nc.jetstream()
        info = await js.stream_info(topology.EVENTS_STREAM)
        assert info.config.name == topology.EVENTS_STREAM
        names = await js.streams_info()
        assert {topology.CMDS_STREAM, topology.EVENTS_STREAM} <= {s.config.name for s in names}
        kv = await js.key_value(topology.KV_MODELS)
        assert kv is not None
        consumer = await js.consumer_info(topology.CMDS_STREAM, topology.REGISTRY_COMMANDS.durable)
        assert consumer.config.durable_name == topology.REGISTRY_COMMANDS.durable
        # An unknown command subject is still the command stream's (the intake dead-letters it).
        ack = await js.publish("slmops.cmd.permissions.probe", b"{}")
        assert ack.stream == topology.CMDS_STREAM


async def test_the_operator_cannot_delete_or_reconfigure_streams_buckets_or_consumers(
    settings: Settings, operator: Path
) -> None:
    durable = topology.REGISTRY_COMMANDS.durable
    async with connected(settings, operator) as probe:
        for subject in (
            f"$JS.API.STREAM.CREATE.{topology.EVENTS_STREAM}",
            f"$JS.API.STREAM.UPDATE.{topology.EVENTS_STREAM}",
            f"$JS.API.STREAM.DELETE.{topology.EVENTS_STREAM}",
            f"$JS.API.STREAM.PURGE.{topology.EVENTS_STREAM}",
            f"$JS.API.STREAM.MSG.DELETE.{topology.EVENTS_STREAM}",
            "$JS.API.STREAM.DELETE.KV_models",  # a bucket is a stream
            "$JS.API.STREAM.PURGE.KV_models",
            f"$JS.API.CONSUMER.DELETE.{topology.CMDS_STREAM}.{durable}",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{topology.CMDS_STREAM}.{durable}",
            f"$JS.API.CONSUMER.CREATE.{topology.CMDS_STREAM}.{durable}.slmops.cmd.>",
            f"$JS.API.CONSUMER.MSG.NEXT.{topology.CMDS_STREAM}.{durable}",  # taking a service's work
            f"$JS.ACK.{topology.CMDS_STREAM}.{durable}.1.1.1.1.0",  # acking (removing) a service's message
            "$KV.models.version.m.1",  # rewriting a registry record
            "$KV.desired.some-device",  # the rollout service is the only writer of desired states
        ):
            assert await probe.publish_refused(subject), subject


async def test_the_operator_cannot_rename_a_durable_through_the_ephemeral_subject(
    settings: Settings, operator: Path
) -> None:
    """The one consumer-create subject an operator has is the bare one, where the server refuses a
    durable name: so it cannot replace a service's consumer with another configuration."""
    durable = topology.REGISTRY_COMMANDS.durable
    request = {
        "stream_name": topology.CMDS_STREAM,
        "config": {"durable_name": durable, "filter_subject": "slmops.cmd.>", "ack_policy": "explicit"},
    }
    async with connected(settings, operator) as probe:
        reply = await probe.nc.request(f"$JS.API.CONSUMER.CREATE.{topology.CMDS_STREAM}", json.dumps(request).encode())
        answer = json.loads(reply.data)
        assert "error" in answer, answer
        info = await probe.nc.jetstream().consumer_info(topology.CMDS_STREAM, durable)
        assert info.config.filter_subject == topology.REGISTRY_COMMANDS.filter_subject


async def test_the_operator_cannot_forge_events_or_answer_for_a_service(settings: Settings, operator: Path) -> None:
    async with connected(settings, operator) as probe:
        for subject in ("slmops.evt.model.registered", "slmops.dlq.registry", "slmops.device.d1.hello"):
            assert await probe.publish_refused(subject), subject
        for subject in ("slmops.rpc.registry.get", "slmops.rpc.>", "slmops.cmd.>", "_INBOX.>", "$KV.>"):
            assert await probe.subscribe_refused(subject), subject


# --- a service --------------------------------------------------------------------------------


async def test_a_service_has_only_what_its_declarations_name(settings: Settings) -> None:
    creds = settings.auth_dir / "creds" / "service-registry.creds"
    async with connected(settings, creds) as probe:
        info = await probe.nc.jetstream().consumer_info(topology.CMDS_STREAM, topology.REGISTRY_COMMANDS.durable)
        assert info.config.durable_name == topology.REGISTRY_COMMANDS.durable
        for subject in (
            "slmops.evt.optimization.completed",  # another service's event
            "slmops.dlq.optimizer",  # another service's dead letters
            f"$JS.API.CONSUMER.MSG.NEXT.{topology.CMDS_STREAM}.{topology.OPTIMIZER_COMMANDS.durable}",
            f"$JS.ACK.{topology.CMDS_STREAM}.{topology.OPTIMIZER_COMMANDS.durable}.1.1.1.1.0",
            f"$JS.API.STREAM.DELETE.{topology.CMDS_STREAM}",
            f"$JS.API.STREAM.UPDATE.{topology.EVENTS_STREAM}",
            "$KV.desired.d1",  # it reads desired states, never writes them
        ):
            assert await probe.publish_refused(subject), subject
        for subject in ("slmops.rpc.optimizer.>", "_INBOX.>"):
            assert await probe.subscribe_refused(subject), subject


async def test_a_client_without_credentials_is_refused(settings: Settings) -> None:
    refusals: list[str] = []

    async def on_error(exc: Exception) -> None:
        refusals.append(str(exc))

    with pytest.raises((TimeoutError, nats.errors.Error)):
        await asyncio.wait_for(
            nats.connect(settings.nats_url, error_cb=on_error, allow_reconnect=False, connect_timeout=2), timeout=10
        )
    assert any("authorization violation" in r.lower() for r in refusals), refusals


@pytest.mark.usefixtures("running_registry")
async def test_no_caller_can_make_a_service_publish_for_it(settings: Settings, operator: Path, nc: Client) -> None:
    """A request's reply subject is the caller's choice: a service answers only on an inbox, or an
    operator could write registry records or forge events with the registry's permissions."""
    js = nc.jetstream()
    events_before = (await js.stream_info(topology.EVENTS_STREAM)).state.last_seq
    forged = f"forged-{unique('k')}"
    async with connected(settings, operator) as probe:
        for reply in (f"$KV.models.{forged}", "slmops.evt.model.registered", "slmops.dlq.registry"):
            await probe.nc.publish("slmops.rpc.registry.list", b"{}", reply=reply)
            await probe.nc.publish("slmops.rpc.registry.health", b"{}", reply=reply)
        await probe.nc.flush()
        assert await health(probe.nc, "registry")  # it still answers, on an inbox
    kv = await js.key_value(topology.KV_MODELS)
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await kv.get(forged)
    assert (await js.stream_info(topology.EVENTS_STREAM)).state.last_seq == events_before


@pytest.mark.usefixtures("running_intake")
async def test_a_device_cannot_claim_another_devices_id_in_its_payload(
    settings: Settings, device: tuple[str, Path], nc: Client
) -> None:
    """The subject is the device's identity (its credentials allow only its own); a payload naming
    another device is dead-lettered, not attributed to that device."""
    from tests.support import dlq_entries

    device_id, creds = device
    victim = unique("victim")
    async with connected(settings, creds) as probe:
        await probe.nc.jetstream().publish(subjects.device_hello(device_id), hello(victim))
    for _ in range(100):
        found = await dlq_entries(nc, containing=victim)
        if found:
            break
        await asyncio.sleep(0.1)
    assert found and "must travel on" in found[0]["Slmops-Dlq-Reason"], found
