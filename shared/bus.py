"""Talking to NATS as a client: the connection, durable publishes and commands.

Everything here is plain nats-py, so a device, the CLI and the services share it without FastStream
(the service side of the bus is the kit, `shared.kit`). Every message carries `Nats-Msg-Id` =
envelope id (JetStream de-duplication) and the W3C `traceparent` of the current span
(`message_headers`). Requests to services go through the typed clients in `shared.clients`.
"""

from __future__ import annotations

from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from opentelemetry import propagate

from shared import subjects
from shared.auth import permissions
from shared.errors import TransientError
from shared.messages.common import CommandOutcome
from shared.messages.envelope import Envelope, Message, encode, wrap
from shared.settings import Settings

REPLY_TO = "Slmops-Reply-To"


class BusError(TransientError):
    """The bus could not deliver or answer (server down, no service listening, timeout)."""


def message_headers(envelope: Envelope[Any], extra: dict[str, str] | None = None) -> dict[str, str]:
    """`Nats-Msg-Id` for de-duplication plus the current trace context."""
    headers = {"Nats-Msg-Id": envelope.id}
    propagate.inject(headers)
    if extra:
        headers.update(extra)
    return headers


def credentials_options(settings: Settings) -> dict[str, Any]:
    """nats-py connect options for the process's identity: its `.creds` file and its own inbox
    prefix (`_INBOX.<role>.<name>`, the only inbox its permissions let it read), or user/password."""
    creds = settings.credentials_file
    if creds is None:
        return {"user": settings.nats_user, "password": settings.nats_password}
    try:
        text = creds.read_text()
    except OSError as exc:
        raise BusError(f"cannot read NATS credentials {creds}: {exc.strerror}") from None
    try:
        inbox = permissions.credentials_inbox(text)
    except (ValueError, KeyError, IndexError) as exc:
        raise BusError(f"{creds} is not a NATS credentials file: {exc}") from None
    return {"user_credentials": str(creds)} | ({"inbox_prefix": inbox} if inbox else {})


async def connect(settings: Settings, *, name: str = "slmops", timeout: float = 5.0) -> Client:
    """A plain nats-py connection for clients (CLI, agent, tools)."""
    options = credentials_options(settings)
    try:
        return await nats.connect(
            settings.nats_url,
            **options,
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
