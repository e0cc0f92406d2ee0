"""Batches from a durable pull consumer, for the paths that carry the fleet's rate (telemetry).

Why not FastStream's subscriber: it handles one message at a time (about 250 µs each, 760 µs with
the kit's policy), and nats-py's `fetch` awaits every message of a batch on its own. At 15,000
windows a second that is the whole budget. So the puller speaks the pull protocol itself: it keeps
two batches' worth of pull requests outstanding on its own inbox (the next batch is on the wire
while this one is handled), collects what arrives, and hands the use case a list.

How a batch is settled (the batch counterpart of `shared.kit.policy`):

  * a message that is not a valid one of the declared types, or is sent on another device's
    subject -> DLQ with the reason; all of a batch's entries are published concurrently, then acked
  * the use case returns                  -> its events published, then every message acked
  * the use case raises                   -> every message nacked with back-off 2^attempt s (<= 30 s);
                                             one at attempt `max_deliver` goes to the DLQ ("gave up
                                             after N attempts") and is acked

The use case must be idempotent per message (each comes with its stream position): a batch can be
delivered again after a crash between its effect and its acks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shared import subjects
from shared.dlq import dead_letter
from shared.messages.envelope import Envelope, InvalidMessage, Message, decode_fast
from shared.topology import DurableConsumer

log = logging.getLogger("slmops.kit")
MAX_RETRY_DELAY = 30.0
STATUS = "Status"
PENDING = "Nats-Pending-Messages"
# A pull request lives this long on the server; one that ends without a status (a reconnect lost
# it) is written off after this plus `LOST_AFTER` seconds of silence.
PULL_EXPIRES_SECONDS = 5.0
LOST_AFTER = 2.0


@dataclass(slots=True, kw_only=True)
class Delivered:
    """One valid message of a batch: its envelope and where it sits in the stream."""

    envelope: Envelope[Any]
    position: int  # stream sequence: unique per message, the same on a redelivery
    subject: str


@dataclass(frozen=True, kw_only=True)
class Batch:
    """What a batch use case gets: the valid messages, and how many were dead-lettered."""

    messages: list[Delivered]
    rejected: int = 0


@dataclass(kw_only=True)
class Puller:
    """Keeps pull requests outstanding on a durable consumer and yields what arrives, in batches."""

    nc: Client
    consumer: DurableConsumer
    inbox_prefix: str
    _inbox: str = ""
    _sub: Subscription | None = None
    _arrived: list[Msg] = field(default_factory=list)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _credit: int = 0
    _heard: float = 0.0

    @property
    def _next_subject(self) -> str:
        return f"$JS.API.CONSUMER.MSG.NEXT.{self.consumer.stream}.{self.consumer.durable}"

    async def start(self) -> None:
        self._inbox = f"{self.inbox_prefix}.{secrets.token_hex(11)}"
        limit = 4 * self.consumer.batch_size
        self._sub = await self.nc.subscribe(
            self._inbox, cb=self._on_message, pending_msgs_limit=limit * 4, pending_bytes_limit=-1
        )

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_message(self, msg: Msg) -> None:
        self._heard = time.monotonic()
        status = (msg.headers or {}).get(STATUS)
        if status:
            # 408 (expired), 409 (too many waiting, consumer changed): the request ended with this
            # many messages undelivered; 100 is an idle heartbeat.
            if status != "100":
                self._credit -= int((msg.headers or {}).get(PENDING, "0") or 0)
                self._ready.set()
            return
        self._credit -= 1
        self._arrived.append(msg)
        # The first message wakes a waiting `next_batch` (which then lingers for more), a full batch
        # ends its lingering: a trickle (a wave of 100 devices) is handled within `linger`, not at
        # the next one-second poll.
        if len(self._arrived) == 1 or len(self._arrived) >= self.consumer.batch_size:
            self._ready.set()

    async def _ask(self) -> None:
        """Keep at least two batches of credit outstanding."""
        if self._credit > 0 and time.monotonic() - self._heard > PULL_EXPIRES_SECONDS + LOST_AFTER:
            self._credit = 0  # requests the server no longer holds (lost in a reconnect)
        batch = self.consumer.batch_size
        while self._credit < 2 * batch:
            body = json.dumps({"batch": batch, "expires": int(PULL_EXPIRES_SECONDS * 1e9)}).encode()
            await self.nc.publish(self._next_subject, body, reply=self._inbox)
            self._credit += batch
            self._heard = time.monotonic()

    async def next_batch(self, *, linger: float = 0.05) -> list[Msg]:
        """The messages that arrived, up to `batch_size`; waits for a full batch at most `linger` s
        after the first message (a quiet stream is handled promptly), or for anything at all."""
        await self._ask()
        while not self._arrived:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout=1.0)
            await self._ask()
        if len(self._arrived) < self.consumer.batch_size:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout=linger)
        batch, self._arrived = self._arrived[: self.consumer.batch_size], self._arrived[self.consumer.batch_size :]
        return batch


@dataclass(frozen=True, kw_only=True)
class BatchSettler:
    """Settles a batch (see the module docstring)."""

    service: str
    consumer: DurableConsumer
    types: tuple[type[Message], ...]
    js: Any
    nc: Client

    def split(self, msgs: Sequence[Msg]) -> tuple[list[tuple[Msg, Delivered]], list[tuple[Msg, str]]]:
        """Valid messages (decoded) and invalid ones (with the reason)."""
        valid: list[tuple[Msg, Delivered]] = []
        invalid: list[tuple[Msg, str]] = []
        for msg in msgs:
            try:
                envelope = decode_fast(msg.data, expected=self.types)
                expected = subjects.reported_on(envelope.data)
                if expected is not None and msg.subject != expected:
                    # A device's identity is the subject its credentials let it publish on.
                    raise InvalidMessage(
                        f"{envelope.type} for device {envelope.data.device_id} must travel on {expected}, "
                        f"not {msg.subject}"
                    )
            except InvalidMessage as exc:
                invalid.append((msg, exc.reason))
                continue
            except Exception as exc:  # a decoder bug must not strand the batch
                invalid.append((msg, f"cannot decode: {type(exc).__name__}: {exc}"))
                continue
            valid.append((msg, Delivered(envelope=envelope, position=_position(msg), subject=msg.subject)))
        return valid, invalid

    async def dead_letter(self, entries: Sequence[tuple[Msg, str]]) -> list[Msg]:
        """Park every entry in the DLQ, concurrently; returns the messages now safe to ack (one whose
        entry could not be published is nacked, to be tried again)."""
        results = await asyncio.gather(
            *(
                dead_letter(
                    self.js,
                    service=self.service,
                    body=msg.data,
                    reason=reason,
                    original_subject=msg.subject,
                    original_id=str(_position(msg)),
                    max_payload=self.nc.max_payload,
                )
                for msg, reason in entries
            ),
            return_exceptions=True,
        )
        parked = []
        for (msg, reason), result in zip(entries, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("cannot dead-letter, will retry", extra={"subject": msg.subject, "error": repr(result)})
                await _quietly(msg.nak(delay=MAX_RETRY_DELAY))
            else:
                log.warning("message rejected", extra={"subject": msg.subject, "reason": reason})
                parked.append(msg)
        return parked

    async def failed(self, msgs: Sequence[Msg], exc: Exception) -> None:
        """The use case raised: retry each message with back-off, or give it up to the DLQ."""
        spent = [m for m in msgs if m.metadata.num_delivered >= self.consumer.max_deliver]
        retried = [m for m in msgs if m.metadata.num_delivered < self.consumer.max_deliver]
        log.warning("batch failed, will retry", extra={"messages": len(msgs), "error": repr(exc)}, exc_info=True)
        for msg in retried:
            await _quietly(msg.nak(delay=min(2.0**msg.metadata.num_delivered, MAX_RETRY_DELAY)))
        reason = f"gave up after {self.consumer.max_deliver} attempts: {type(exc).__name__}: {exc}"
        for msg in await self.dead_letter([(m, reason) for m in spent]):
            await _quietly(msg.ack())


def _position(msg: Msg) -> int:
    """The stream sequence, from the reply subject `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>...`
    (read directly: nats-py's `metadata` parses every field, at fleet rate a visible cost)."""
    tokens = msg.reply.split(".")
    # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>, with
    # `<domain>.<account hash>.` after ACK in the newer form (and a trailing random token).
    return int(tokens[5] if len(tokens) == 9 else tokens[7])


async def _quietly(call: Awaitable[Any]) -> None:
    """A failed ack or nack only risks a redelivery, which the use case absorbs."""
    with contextlib.suppress(Exception):
        await call


async def ack_all(msgs: Sequence[Msg]) -> None:
    """Ack every message (one publish each; nats-py buffers them into few writes)."""
    for msg in msgs:
        await _quietly(msg.ack())
