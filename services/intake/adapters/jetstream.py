"""The command stream over JetStream's API: what a sweep reads, copies to the DLQ and deletes.

This is the one part of the intake that the kit's declarations do not cover, because no consumer
can read a work queue's "everything else". For the identity the intake runs as, a sweep needs:
request `$JS.API.STREAM.INFO.SLMOPS_CMDS`, `$JS.API.CONSUMER.LIST.SLMOPS_CMDS`,
`$JS.API.STREAM.MSG.GET.SLMOPS_CMDS` and `$JS.API.STREAM.MSG.DELETE.SLMOPS_CMDS`; publish on
`slmops.dlq.intake` (declared by the kit) and on `_INBOX.>` (the waiting sender's reply).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Mapping, Sequence
from typing import TypeVar

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from services.intake.domain import WHOLE_STREAM
from services.intake.errors import StreamUnavailable
from services.intake.ports import StoredCommand
from shared import subjects, topology
from shared.dlq import dead_letter
from shared.messages.common import CommandOutcome

T = TypeVar("T")
# The JetStream API a sweep calls, beyond what the kit's declarations grant a service.
SWEEP_API = tuple(
    f"$JS.API.{call}.{topology.CMDS_STREAM}"
    for call in ("STREAM.INFO", "CONSUMER.LIST", "STREAM.MSG.GET", "STREAM.MSG.DELETE")
)
CONSUMER_PAGE = 256  # the server's page size for CONSUMER.LIST


class JetStreamCommands:
    """`CommandStream` over SLMOPS_CMDS; dead letters go to `slmops.dlq.<service>`."""

    def __init__(self, nc: Client, js: JetStreamContext, *, service: str) -> None:
        self._nc = nc
        self._js = js
        self._service = service
        self._stream = topology.CMDS_STREAM

    @property
    def closed(self) -> bool:
        return bool(self._nc.is_closed)

    async def consumers(self) -> Mapping[str, Sequence[str]]:
        found: dict[str, Sequence[str]] = {}
        while True:
            page = await _answered(self._js.consumers_info(self._stream, offset=len(found)), "list consumers")
            for info in page:
                config = info.config
                filters = config.filter_subjects or ([config.filter_subject] if config.filter_subject else [])
                found[info.name] = filters or [WHOLE_STREAM]
            if len(page) < CONSUMER_PAGE:
                return found

    async def subjects(self) -> Mapping[str, int]:
        info = await _answered(self._js.stream_info(self._stream, subjects_filter=f"{subjects.CMD}.>"), "stream info")
        return dict(info.state.subjects or {})

    async def messages(self, subject: str, *, limit: int) -> Sequence[StoredCommand]:
        found: list[StoredCommand] = []
        cursor = 1
        while len(found) < limit:
            try:
                raw = await self._js.get_msg(self._stream, seq=cursor, subject=subject, next=True)
            except NotFoundError:
                break  # no more messages on this subject
            except (NatsError, TimeoutError) as exc:
                raise _unavailable("get message", exc) from exc
            position = int(raw.seq or cursor)
            found.append(
                StoredCommand(subject=subject, position=position, body=raw.data or b"", headers=dict(raw.headers or {}))
            )
            cursor = position + 1
        return found

    async def dead_letter(self, message: StoredCommand, *, reason: str) -> None:
        await _answered(
            dead_letter(
                self._js,
                service=self._service,
                body=message.body,
                reason=reason,
                original_subject=message.subject,
                original_id=str(message.position),
            ),
            "dead-letter",
        )

    async def delete(self, message: StoredCommand) -> None:
        try:
            await self._js.delete_msg(self._stream, message.position)
        except NotFoundError:
            pass  # already gone is what we wanted
        except (NatsError, TimeoutError) as exc:
            raise _unavailable("delete message", exc) from exc

    async def reply(self, inbox: str, outcome: CommandOutcome) -> None:
        with contextlib.suppress(Exception):
            await self._nc.publish(inbox, outcome.model_dump_json().encode())


async def _answered(call: Awaitable[T], what: str) -> T:
    """Await a JetStream API call; any NATS failure (timeout, closed connection, API error) is a
    `StreamUnavailable`."""
    try:
        return await call
    except (NatsError, TimeoutError) as exc:
        raise _unavailable(what, exc) from exc


def _unavailable(what: str, exc: Exception) -> StreamUnavailable:
    return StreamUnavailable(f"{what} on {topology.CMDS_STREAM}: {type(exc).__name__}: {exc}")
