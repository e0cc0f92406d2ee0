"""Talking to NATS: connections, the FastStream broker factory, and the publish/request helpers.

Two kinds of code publish: FastStream services (through `make_broker`) and plain clients such as
the CLI and the edge agent (through a nats-py connection). Both go through `message_headers`, so
every message carries `Nats-Msg-Id` = envelope id (JetStream de-duplication) and the W3C
`traceparent` of the current span.
"""

from __future__ import annotations

import logging
from typing import Any

import nats
from faststream.nats import NatsBroker, NatsUserPassword
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from opentelemetry import propagate
from opentelemetry.trace import TracerProvider

from shared import subjects
from shared.messages.common import CommandOutcome, RpcReply
from shared.messages.envelope import Envelope, Message, encode, wrap
from shared.settings import Settings

REPLY_TO = "Slmops-Reply-To"


class BusError(RuntimeError):
    """The bus could not deliver or answer (server down, no service listening, timeout)."""


class RemoteError(RuntimeError):
    """A service answered a request with an error.

    Args:
        code: machine-readable error code from the service.
        message: the service's explanation.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def message_headers(envelope: Envelope[Any], extra: dict[str, str] | None = None) -> dict[str, str]:
    """`Nats-Msg-Id` for de-duplication plus the current trace context."""
    headers = {"Nats-Msg-Id": envelope.id}
    propagate.inject(headers)
    if extra:
        headers.update(extra)
    return headers


def make_broker(settings: Settings, *, service: str, tracer_provider: TracerProvider | None = None) -> NatsBroker:
    """A FastStream NATS broker wired with OpenTelemetry (consume and publish spans, propagation)."""
    security = (
        NatsUserPassword(username=settings.nats_user, password=settings.nats_password or "")
        if settings.nats_user
        else None
    )
    return NatsBroker(
        settings.nats_url,
        security=security,
        name=f"slmops-{service}",
        middlewares=[NatsTelemetryMiddleware(tracer_provider=tracer_provider)],
        # FastStream logs every message received/processed; that is DEBUG detail here, and the
        # broker's logger goes through our JSON formatter like every other.
        logger=logging.getLogger(f"slmops.{service}.broker"),
        log_level=logging.DEBUG,
        graceful_timeout=15.0,
    )


async def connect(settings: Settings, *, name: str = "slmops", timeout: float = 5.0) -> Client:
    """A plain nats-py connection for clients (CLI, agent, tools)."""
    try:
        return await nats.connect(
            settings.nats_url,
            user=settings.nats_user,
            password=settings.nats_password,
            name=name,
            connect_timeout=timeout,
            max_reconnect_attempts=3,
            allow_reconnect=True,
        )
    except (OSError, NatsTimeout, nats.errors.NoServersError) as exc:
        raise BusError(f"cannot reach NATS at {settings.nats_url}: {exc or type(exc).__name__}") from None


async def publish(
    js: JetStreamContext, envelope: Envelope[Any], subject: str, *, headers: dict[str, str] | None = None
) -> None:
    """Publish an envelope to JetStream and wait for the stream's ack (so it is durable)."""
    try:
        await js.publish(subject, encode(envelope), headers=message_headers(envelope, headers))
    except (NatsTimeout, nats.js.errors.NoStreamResponseError) as exc:
        raise BusError(f"JetStream did not acknowledge {subject}: {type(exc).__name__}") from None


async def send_command(
    nc: Client, payload: Message, *, source: str, wait: float | None = None, command_id: str | None = None
) -> tuple[str, CommandOutcome | None]:
    """Publish a command to the durable command stream; optionally wait for its outcome.

    The command is durable once this returns, whether or not the outcome arrives in `wait`
    seconds: a slow or restarting service still handles it.

    Returns:
        The command id, and the outcome if it arrived in time.
    """
    envelope = wrap(payload, source=source, id=command_id)
    js = nc.jetstream()
    if wait is None:
        await publish(js, envelope, subjects.command(payload))
        return envelope.id, None
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, max_msgs=1)
    try:
        await publish(js, envelope, subjects.command(payload), headers={REPLY_TO: inbox})
        try:
            msg = await sub.next_msg(timeout=wait)
        except NatsTimeout:
            return envelope.id, None
        return envelope.id, CommandOutcome.model_validate_json(msg.data)
    finally:
        await sub.unsubscribe()


async def request(
    nc: Client, service: str, operation: str, payload: Message, *, source: str, timeout: float = 10.0
) -> Any:
    """Request/reply with a service; returns the reply's `result`.

    Raises:
        BusError: nobody answered (service not running) or no answer in time.
        RemoteError: the service answered with an error.
    """
    envelope = wrap(payload, source=source)
    subject = subjects.rpc(service, operation)
    try:
        msg = await nc.request(subject, encode(envelope), timeout=timeout, headers=message_headers(envelope))
    except NoRespondersError:
        raise BusError(f"no {service} service is answering on {subject}; is it running?") from None
    except (TimeoutError, NatsTimeout):
        raise BusError(f"{service} did not answer {operation} within {timeout:.0f}s") from None
    reply = RpcReply.model_validate_json(msg.data)
    if not reply.ok:
        err = reply.error
        raise RemoteError(err.code if err else "error", err.message if err else "unknown error")
    return reply.result
