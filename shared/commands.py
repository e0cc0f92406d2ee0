"""Handling one command from a work-queue stream: the ack policy every service shares.

  * applied / unchanged                -> publish the outcome's events, reply, ack
  * invalid message or a caller error  -> DLQ with the reason, reply "rejected", ack (never retried)
  * any other exception                -> nack with back-off 2^attempt s (<= 30 s); at attempt
                                          `max_deliver` the command goes to the DLQ with the last
                                          error ("gave up after N attempts: ...") and is acked
While a command runs, the message is marked in progress every third of `ack_wait`, so a long
optimization is not redelivered to another replica mid-way; a killed process stops the heartbeat
and the command is redelivered after `ack_wait`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared import subjects
from shared.bus import REPLY_TO, message_headers
from shared.dlq import dead_letter
from shared.messages.common import CommandOutcome
from shared.messages.envelope import Envelope, InvalidMessage, Message, decode, encode, wrap

log = logging.getLogger("slmops.commands")


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What a command did, and the events to announce, each with its deterministic id."""

    status: Literal["applied", "unchanged"]
    events: Sequence[tuple[Message, str]] = ()
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class CommandPolicy:
    """How a service settles its commands: which payloads it takes, which errors are the caller's
    fault (`rejects`: DLQ at once) and which are expected outages (`transient`: logged briefly)."""

    service: str
    accepts: tuple[type[Message], ...]
    rejects: tuple[type[Exception], ...] = ()
    transient: tuple[type[Exception], ...] = ()
    ack_wait: float = 30.0
    max_deliver: int = 5


async def process_command(
    raw: Msg,
    *,
    policy: CommandPolicy,
    handle: Callable[[Envelope[Any]], Awaitable[Outcome]],
    nc: Client,
    js: JetStreamContext,
) -> None:
    """Decode, handle, announce, reply and settle one JetStream command message."""
    body = raw.data
    reply_to = (raw.headers or {}).get(REPLY_TO)
    meta = raw.metadata
    position = str(meta.sequence.stream)
    command_id = position

    async def reject(reason: str) -> None:
        log.warning("command rejected", extra={"command_id": command_id, "subject": raw.subject, "reason": reason})
        await dead_letter(
            js, service=policy.service, body=body, reason=reason, original_subject=raw.subject, original_id=position
        )
        await _reply(nc, reply_to, CommandOutcome(command_id=command_id, status="rejected", reason=reason))
        await raw.ack()

    try:
        envelope = decode(body, expected=policy.accepts)
    except InvalidMessage as exc:
        await reject(exc.reason)
        return
    command_id = envelope.id
    heartbeat = asyncio.create_task(_keep_alive(raw, policy.ack_wait / 3))
    try:
        outcome = await handle(envelope)
    except policy.rejects as exc:
        await reject(str(exc))
        return
    except Exception as exc:  # transient, or a bug: retry a bounded number of times
        if meta.num_delivered >= policy.max_deliver:
            await reject(f"gave up after {meta.num_delivered} attempts: {type(exc).__name__}: {exc}")
            return
        log.warning(
            "command failed, will retry",
            extra={"command_id": command_id, "attempt": meta.num_delivered, "error": repr(exc)},
            exc_info=not isinstance(exc, policy.transient),
        )
        await raw.nak(delay=min(2.0**meta.num_delivered, 30.0))
        return
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
    for event, event_id in outcome.events:
        await publish_event(js, event, source=policy.service, event_id=event_id)
    await _reply(nc, reply_to, CommandOutcome(command_id=command_id, status=outcome.status, result=outcome.result))
    log.info("command done", extra={"command_id": command_id, "type": envelope.type, "status": outcome.status})
    await raw.ack()


async def publish_event(js: JetStreamContext, event: Message, *, source: str, event_id: str) -> None:
    """Publish an event durably with its deterministic id (JetStream drops a republished copy)."""
    envelope = wrap(event, source=source, id=event_id)
    await js.publish(subjects.event(event), encode(envelope), headers=message_headers(envelope))


async def _keep_alive(raw: Msg, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):  # a failed heartbeat only risks a redelivery
            await raw.in_progress()


async def _reply(nc: Client, inbox: str | None, outcome: CommandOutcome) -> None:
    if inbox and inbox.startswith("_INBOX."):
        await nc.publish(inbox, outcome.model_dump_json().encode())
