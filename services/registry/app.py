"""FastStream wiring for the registry: decode, call the service, publish, decide the ack.

The only module of the registry that imports FastStream. Ack outcomes, decided here and only here:
  * applied / unchanged                -> publish the event (if any), reply, ack
  * invalid message or Rejected error  -> DLQ with the reason, reply, ack (never retried)
  * Unavailable or an unexpected error -> nack with a delay; after `max_deliver` attempts the
                                          command goes to the DLQ with the last error, and is acked
"""

from __future__ import annotations

import logging
from typing import Any

from faststream import AckPolicy, FastStream
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from nats.js import JetStreamContext

from services.registry.adapters.nats_kv import KvRecordStore
from services.registry.errors import RegistryError, Rejected
from services.registry.service import Outcome, RegistryService
from shared import subjects, topology
from shared.artifacts import ArtifactStore
from shared.bus import REPLY_TO, make_broker, message_headers
from shared.dlq import dead_letter
from shared.logs import setup_logging
from shared.messages.common import CommandOutcome, RpcError, RpcReply
from shared.messages.envelope import Envelope, InvalidMessage, Message, decode, encode, wrap
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
from shared.settings import Settings, load_settings
from shared.signing import load_or_create_private_key
from shared.tracing import setup_tracing

SERVICE = "registry"
COMMANDS = (RegisterModel, RegisterVariant, SetAlias)
log = logging.getLogger("slmops.registry")


class _Runtime:
    """What start-up builds and the handlers share; filled in `on_startup`."""

    service: RegistryService
    js: JetStreamContext


def build_app(settings: Settings | None = None) -> FastStream:
    settings = settings or load_settings()
    setup_logging(SERVICE, settings.log_level)
    broker = make_broker(settings, service=SERVICE, tracer_provider=setup_tracing(settings, service=SERVICE))
    rt = _Runtime()
    app = FastStream(broker, logger=log)

    @app.on_startup
    async def start() -> None:
        # Connect and build the service *before* the broker starts its subscribers, so no
        # handler can see a message while the service is still missing.
        await broker.connect()
        rt.js = broker.connection.jetstream()
        await topology.ensure_topology(rt.js)
        store = ArtifactStore.from_settings(settings)
        rt.service = RegistryService(
            store=KvRecordStore(await rt.js.key_value(topology.KV_MODELS)),
            blobs=store,
            signing_key=load_or_create_private_key(settings.signing_key_file),
        )
        log.info("registry ready", extra={"nats": settings.nats_url, "s3": settings.s3_endpoint})

    _command_handler(broker, rt, settings)
    _rpc_handlers(broker, rt)
    return app


def _command_handler(broker: NatsBroker, rt: _Runtime, settings: Settings) -> None:
    consumer = topology.REGISTRY_COMMANDS

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
        raw = msg.raw_message
        body = raw.data
        reply_to = (raw.headers or {}).get(REPLY_TO)
        meta = raw.metadata
        position = str(meta.sequence.stream)
        try:
            envelope = decode(body, expected=COMMANDS)
        except InvalidMessage as exc:
            await _reject(rt, body, raw.subject, position, exc.reason, reply_to, command_id=position, broker=broker)
            await msg.ack()
            return
        try:
            outcome = await _dispatch(rt.service, envelope)
        except Rejected as exc:
            await _reject(rt, body, raw.subject, position, str(exc), reply_to, command_id=envelope.id, broker=broker)
            await msg.ack()
            return
        except Exception as exc:  # transient or a bug: retry a bounded number of times
            if meta.num_delivered >= settings.max_deliver:
                reason = f"gave up after {meta.num_delivered} attempts: {type(exc).__name__}: {exc}"
                await _reject(rt, body, raw.subject, position, reason, reply_to, command_id=envelope.id, broker=broker)
                await msg.ack()
                return
            log.warning(
                "command failed, will retry",
                extra={"command_id": envelope.id, "attempt": meta.num_delivered, "error": repr(exc)},
                exc_info=not isinstance(exc, RegistryError),
            )
            await msg.nack(delay=min(2.0**meta.num_delivered, 30.0))
            return
        if outcome.event is not None:
            event = wrap(outcome.event, source=SERVICE, id=outcome.event_id)
            await rt.js.publish(subjects.event(outcome.event), encode(event), headers=message_headers(event))
        await _reply(
            broker, reply_to, CommandOutcome(command_id=envelope.id, status=outcome.status, result=outcome.result)
        )
        log.info("command done", extra={"command_id": envelope.id, "type": envelope.type, "status": outcome.status})
        await msg.ack()


async def _dispatch(service: RegistryService, envelope: Envelope[Any]) -> Outcome:
    data = envelope.data
    if isinstance(data, RegisterModel):
        return await service.register_model(data, command_id=envelope.id)
    if isinstance(data, RegisterVariant):
        return await service.register_variant(data, command_id=envelope.id)
    if isinstance(data, SetAlias):
        return await service.set_alias(data, command_id=envelope.id)
    raise TypeError(f"no dispatch for {type(data).__name__}")  # decode() only lets COMMANDS through


async def _reject(
    rt: _Runtime,
    body: bytes,
    subject: str,
    position: str,
    reason: str,
    reply_to: str | None,
    *,
    command_id: str,
    broker: NatsBroker,
) -> None:
    log.warning("command rejected", extra={"command_id": command_id, "subject": subject, "reason": reason})
    await dead_letter(rt.js, service=SERVICE, body=body, reason=reason, original_subject=subject, original_id=position)
    await _reply(broker, reply_to, CommandOutcome(command_id=command_id, status="rejected", reason=reason))


async def _reply(broker: NatsBroker, inbox: str | None, outcome: CommandOutcome) -> None:
    if inbox and inbox.startswith("_INBOX."):
        await broker.connection.publish(inbox, outcome.model_dump_json().encode())


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

    @broker.subscriber(subjects.health(SERVICE), title="registry health")
    async def health(msg: NatsMessage) -> bytes:
        ready = hasattr(rt, "service")
        return RpcReply(ok=ready, result={"service": SERVICE, "ready": ready}).model_dump_json().encode()


def _error(code: str, message: str) -> bytes:
    return RpcReply(ok=False, error=RpcError(code=code, message=message)).model_dump_json().encode()


def _plain(result: Any) -> Any:
    if isinstance(result, list):
        return [_plain(r) for r in result]
    if hasattr(result, "model_dump"):
        return result.model_dump(mode="json")
    return result
