"""How every message a service receives is settled: the one place that decides acks, retries and replies.

Durable messages (commands, and events a service follows), from a pull consumer, one at a time:

  * handled: applied / unchanged      -> publish the outcome's events and commands, reply, ack
  * not a valid message, or a caller  -> DLQ with the reason, reply "rejected", ack (never retried)
    error (`shared.errors.CallerError`)
  * anything else                     -> nack with back-off 2^attempt s (<= 30 s); at attempt
                                         `max_deliver` the message goes to the DLQ with the last
                                         error ("gave up after N attempts: ...") and is acked

While a message is handled it is marked in progress every third of `ack_wait`, so a long
optimization is not redelivered to another replica mid-way; a killed process stops the heartbeat
and the message is redelivered after `ack_wait`. Nothing is retried forever and nothing is lost:
every message ends as its outcome or as a DLQ entry.

Nothing a sender controls can make the service break the server's limits (which would close its
connection): the body is bounded by `decode`, a DLQ entry is cut to fit (`shared.dlq`), reasons are
clipped, a reply goes only to a well-formed inbox (a 7 KB `Slmops-Reply-To` would otherwise be a
subject over the server's control-line limit), and a reply over the connection's `max_payload` is
replaced by an error saying so.

Requests (core NATS request/reply): the answer is the handler's result in an `RpcReply`, or an
error with the code of its branch of `shared.errors` (`invalid_request` for a malformed request,
`internal` for a bug, whose traceback is logged here).

The kit runs each policy as the FastStream middleware of that declaration's subscriber (`Settle`),
around FastStream's own decoding (the kit's decoder, `decode`) and the typed handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from faststream.message import StreamMessage
from faststream.middlewares import BaseMiddleware
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared import bus, subjects
from shared.dlq import dead_letter
from shared.errors import CallerError, InvalidRequest, SlmopsError, TransientError, wire_code
from shared.messages.common import CommandOutcome
from shared.messages.envelope import MAX_HEADER_BYTES, MAX_REASON_CHARS, Envelope, InvalidMessage, Message, clip, wrap
from shared.messages.rpc import Rpc, error_reply
from shared.outcomes import Outcome
from shared.topology import DurableConsumer

log = logging.getLogger("slmops.kit")
CallNext = Callable[[StreamMessage[Any]], Awaitable[Any]]
MAX_RETRY_DELAY = 30.0


class Policy(Protocol):
    async def settle(self, call_next: CallNext, message: StreamMessage[Any]) -> Any: ...


class Connected(Protocol):
    """What a durable policy uses once the service is up (filled in by the kit at start-up)."""

    nc: Client
    publisher: Publisher


class Settle(BaseMiddleware):
    """The FastStream middleware that hands a subscriber's messages to its policy."""

    def __init__(self, msg: Any, /, *, context: Any, policy: Policy) -> None:
        super().__init__(msg, context=context)
        self._policy = policy

    async def consume_scope(self, call_next: CallNext, msg: StreamMessage[Any]) -> Any:
        return await self._policy.settle(call_next, msg)


@dataclass(frozen=True, kw_only=True)
class Publisher:
    """Where a policy sends what an outcome implies; refuses what the service did not declare.

    A service declares the events it emits and the commands it sends (they are its contract, in its
    AsyncAPI document); publishing anything else is a programming error, caught here.
    """

    service: str
    js: JetStreamContext
    events: frozenset[type[Message]]
    commands: frozenset[type[Message]]

    async def event(self, event: Message, event_id: str) -> None:
        """Publish an event durably with its deterministic id (JetStream drops a republished copy)."""
        self._check(events=[event])
        await bus.publish(self.js, wrap(event, source=self.service, id=event_id), subjects.event(event))

    async def outcome(self, outcome: Outcome) -> None:
        """Publish an outcome's events, then its commands; nothing at all if any type is undeclared."""
        self._check(events=[e for e, _ in outcome.events], commands=[c for c, _ in outcome.commands])
        for event, event_id in outcome.events:
            await bus.publish(self.js, wrap(event, source=self.service, id=event_id), subjects.event(event))
        for command, command_id in outcome.commands:
            await bus.publish(self.js, wrap(command, source=self.service, id=command_id), subjects.command(command))

    def _check(self, *, events: Sequence[Message] = (), commands: Sequence[Message] = ()) -> None:
        for event in events:
            if type(event) not in self.events:
                raise TypeError(f"{self.service} publishes {event.TYPE!r} without declaring it with emits()")
        for command in commands:
            if type(command) not in self.commands:
                raise TypeError(f"{self.service} sends {command.TYPE!r} without declaring it with sends()")


@dataclass(frozen=True, kw_only=True)
class DurablePolicy:
    """Settles messages from one durable consumer (see the module docstring)."""

    service: str
    consumer: DurableConsumer
    live: Connected

    async def settle(self, call_next: CallNext, message: StreamMessage[Any]) -> None:
        raw: Msg = message.raw_message
        meta = raw.metadata
        position = str(meta.sequence.stream)
        reply_to = subjects.valid_inbox((raw.headers or {}).get(bus.REPLY_TO))
        try:
            envelope = cast(Envelope[Any], await message.decode())
        except InvalidMessage as exc:
            await self._reject(raw, reason=exc.reason, message_id=position, reply_to=reply_to)
            return
        except Exception as exc:  # a decoder bug must not strand the message either
            await self._reject(
                raw, reason=f"cannot decode: {type(exc).__name__}: {exc}", message_id=position, reply_to=reply_to
            )
            return
        heartbeat = asyncio.create_task(_keep_alive(raw, self.consumer.ack_wait_seconds / 3))
        try:
            outcome: Outcome = await call_next(message)
            # Announced before the ack: a failure here (NATS down, an undeclared event) is retried
            # like one in the use case, which is idempotent, and the events' ids de-duplicate.
            await self.live.publisher.outcome(outcome)
        except CallerError as exc:
            await self._reject(raw, reason=str(exc), message_id=envelope.id, reply_to=reply_to)
            return
        except Exception as exc:  # transient, or a bug: retry a bounded number of times
            await self._retry_or_give_up(raw, exc, message_id=envelope.id, reply_to=reply_to)
            return
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        await _reply(
            self.live.nc, reply_to, CommandOutcome(command_id=envelope.id, status=outcome.status, result=outcome.result)
        )
        log.info("message handled", extra={"message_id": envelope.id, "type": envelope.type, "status": outcome.status})
        await raw.ack()

    async def _retry_or_give_up(self, raw: Msg, exc: Exception, *, message_id: str, reply_to: str | None) -> None:
        attempt = raw.metadata.num_delivered
        if attempt >= self.consumer.max_deliver:
            reason = f"gave up after {attempt} attempts: {type(exc).__name__}: {exc}"
            await self._reject(raw, reason=reason, message_id=message_id, reply_to=reply_to)
            return
        log.warning(
            "handling failed, will retry",
            extra={"message_id": message_id, "attempt": attempt, "error": repr(exc)},
            exc_info=not isinstance(exc, TransientError),
        )
        await raw.nak(delay=min(2.0**attempt, MAX_RETRY_DELAY))

    async def _reject(self, raw: Msg, *, reason: str, message_id: str, reply_to: str | None) -> None:
        reason = clip(reason, MAX_REASON_CHARS)
        log.warning("message rejected", extra={"message_id": message_id, "subject": raw.subject, "reason": reason})
        position = str(raw.metadata.sequence.stream)
        try:
            await dead_letter(
                self.live.publisher.js,
                service=self.service,
                body=raw.data,
                reason=reason,
                original_subject=raw.subject,
                original_id=position,
                max_payload=self.live.nc.max_payload,
            )
        except Exception as exc:  # the DLQ is unreachable: keep the message, try again later
            log.warning("cannot dead-letter, will retry", extra={"message_id": message_id, "error": repr(exc)})
            await raw.nak(delay=MAX_RETRY_DELAY)
            return
        await _reply(self.live.nc, reply_to, CommandOutcome(command_id=message_id, status="rejected", reason=reason))
        await raw.ack()


@dataclass(frozen=True, kw_only=True)
class RequestPolicy:
    """Answers one request/reply operation (see the module docstring)."""

    service: str
    rpc: Rpc[Any, Any]

    async def settle(self, call_next: CallNext, message: StreamMessage[Any]) -> bytes:
        try:
            await message.decode()
            # Encoded here, inside the try: a result that is not the declared reply type is a bug,
            # answered as one, not a reply that never comes.
            reply = self.rpc.answer(await call_next(message))
        except InvalidMessage as exc:
            return error_reply(InvalidRequest.code, exc.reason)
        except SlmopsError as exc:
            return error_reply(wire_code(exc), clip(str(exc), MAX_REASON_CHARS))
        except Exception as exc:  # a bug: say so rather than leave the caller waiting for a timeout
            log.exception("request failed", extra={"operation": self.rpc.request.TYPE})
            return error_reply(SlmopsError.code, f"{self.service} failed on {self.rpc.operation}: {type(exc).__name__}")
        limit = _max_payload(message.raw_message) - MAX_HEADER_BYTES
        if len(reply) > limit:  # the server would close the connection over it
            log.error("reply too large", extra={"operation": self.rpc.request.TYPE, "bytes": len(reply)})
            return error_reply(
                SlmopsError.code,
                f"{self.service} {self.rpc.operation}: the reply is {len(reply)} bytes, over the {limit} a "
                "message may carry; ask for less",
            )
        return reply


async def _keep_alive(raw: Msg, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):  # a failed heartbeat only risks a redelivery
            await raw.in_progress()


def _max_payload(raw: Any) -> int:
    """The receiving connection's `max_payload` (what the server accepts in one message)."""
    client = getattr(raw, "_client", None)
    return int(getattr(client, "max_payload", 0) or 1024 * 1024)


async def _reply(nc: Client, inbox: str | None, outcome: CommandOutcome) -> None:
    """Best effort: a sender that is gone, or a lost reply, never holds up the ack. No headers, so
    nats-py's own `max_payload` check covers the whole message and an oversized one fails here."""
    if subjects.valid_inbox(inbox):
        with contextlib.suppress(Exception):
            await nc.publish(cast(str, inbox), outcome.model_dump_json().encode())
