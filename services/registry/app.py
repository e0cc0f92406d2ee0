"""FastStream wiring for the registry: decode, call the service, publish, decide the ack.

The only module of the registry that imports FastStream. Commands settle by the shared policy in
`shared.commands` (Rejected errors: DLQ at once; anything else: bounded retries); requests are
answered on `slmops.rpc.registry.*`.
"""

from __future__ import annotations

import logging
from typing import Any

from faststream import AckPolicy, FastStream
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from nats.js import JetStreamContext

from services.registry.adapters.nats_kv import KvRecordStore
from services.registry.errors import RegistryError, Rejected, Unavailable
from services.registry.service import RegistryService
from shared import subjects, topology
from shared.artifacts import ArtifactStore
from shared.commands import CommandPolicy, Outcome, process_command
from shared.messages.common import RpcError, RpcReply
from shared.messages.envelope import Envelope, InvalidMessage, Message, decode
from shared.messages.registry import (
    GetAliases,
    GetDownloadUrl,
    GetModel,
    GetPublicKey,
    ListModels,
    RegisterModel,
    RegisterVariant,
    SetAlias,
)
from shared.service_app import service_app
from shared.settings import Settings, load_settings
from shared.signing import load_or_create_private_key

SERVICE = "registry"
COMMANDS = (RegisterModel, RegisterVariant, SetAlias)
log = logging.getLogger("slmops.registry")


class _Runtime:
    """What start-up builds and the handlers share; filled in `on_startup`."""

    service: RegistryService
    js: JetStreamContext


def build_app(settings: Settings | None = None) -> FastStream:
    settings = settings or load_settings()
    rt = _Runtime()

    async def start(broker: NatsBroker, js: JetStreamContext) -> None:
        rt.js = js
        rt.service = RegistryService(
            store=KvRecordStore(await js.key_value(topology.KV_MODELS)),
            blobs=ArtifactStore.from_settings(settings),
            signing_key=load_or_create_private_key(settings.signing_key_file),
        )

    app, broker = service_app(SERVICE, settings, start=start)
    _command_handler(broker, rt, settings)
    _rpc_handlers(broker, rt)
    return app


def _command_handler(broker: NatsBroker, rt: _Runtime, settings: Settings) -> None:
    consumer = topology.REGISTRY_COMMANDS
    policy = CommandPolicy(
        service=SERVICE,
        accepts=COMMANDS,
        rejects=(Rejected,),
        transient=(Unavailable,),
        ack_wait=settings.ack_wait_seconds,
        max_deliver=settings.max_deliver,
    )

    @broker.subscriber(
        consumer.filter_subject,
        stream=JStream(name=consumer.stream, declare=False),
        durable=consumer.durable,
        pull_sub=PullSub(batch_size=1, timeout=5.0),
        config=ConsumerConfig(ack_wait=settings.ack_wait_seconds, max_deliver=settings.max_deliver + 1),
        ack_policy=AckPolicy.MANUAL,
        title="registry commands",
    )
    async def on_command(msg: NatsMessage) -> None:
        await process_command(
            msg.raw_message,
            policy=policy,
            handle=lambda env: _dispatch(rt.service, env),
            nc=broker.connection,
            js=rt.js,
        )


async def _dispatch(service: RegistryService, envelope: Envelope[Any]) -> Outcome:
    data = envelope.data
    if isinstance(data, RegisterModel):
        return await service.register_model(data, command_id=envelope.id)
    if isinstance(data, RegisterVariant):
        return await service.register_variant(data, command_id=envelope.id)
    if isinstance(data, SetAlias):
        return await service.set_alias(data, command_id=envelope.id)
    raise TypeError(f"no dispatch for {type(data).__name__}")  # decode() only lets COMMANDS through


def _rpc_handlers(broker: NatsBroker, rt: _Runtime) -> None:
    """Request/reply queries, load-balanced over replicas by a queue group."""

    async def answer(body: bytes, expected: type[Message], call: Any) -> bytes:
        try:
            request = decode(body, expected=(expected,)).data
            result = await call(request)
        except InvalidMessage as exc:
            return _error("invalid_request", exc.reason)
        except RegistryError as exc:
            return _error(exc.code, str(exc))
        return RpcReply(ok=True, result=_plain(result)).model_dump_json().encode()

    @broker.subscriber(subjects.rpc(SERVICE, "list"), queue=SERVICE, title="registry list")
    async def list_models(msg: NatsMessage) -> bytes:
        return await answer(msg.raw_message.data, ListModels, lambda r: rt.service.list_models(r.name))

    @broker.subscriber(subjects.rpc(SERVICE, "get"), queue=SERVICE, title="registry get")
    async def get_model(msg: NatsMessage) -> bytes:
        return await answer(msg.raw_message.data, GetModel, lambda r: rt.service.get_model(r.name, r.ref))

    @broker.subscriber(subjects.rpc(SERVICE, "aliases"), queue=SERVICE, title="registry aliases")
    async def aliases(msg: NatsMessage) -> bytes:
        return await answer(msg.raw_message.data, GetAliases, lambda r: rt.service.aliases(r.name))

    @broker.subscriber(subjects.rpc(SERVICE, "download_url"), queue=SERVICE, title="registry download url")
    async def download_url(msg: NatsMessage) -> bytes:
        return await answer(msg.raw_message.data, GetDownloadUrl, lambda r: rt.service.download_url(r.digest))

    @broker.subscriber(subjects.rpc(SERVICE, "public_key"), queue=SERVICE, title="registry public key")
    async def public_key(msg: NatsMessage) -> bytes:
        async def call(_: GetPublicKey) -> Any:
            return rt.service.public_key()

        return await answer(msg.raw_message.data, GetPublicKey, call)


def _error(code: str, message: str) -> bytes:
    return RpcReply(ok=False, error=RpcError(code=code, message=message)).model_dump_json().encode()


def _plain(result: Any) -> Any:
    if isinstance(result, list):
        return [_plain(r) for r in result]
    if hasattr(result, "model_dump"):
        return result.model_dump(mode="json")
    return result
