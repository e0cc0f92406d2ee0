"""The intake's collaborator: the command stream, as far as a sweep needs it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shared.messages.common import CommandOutcome


@dataclass(frozen=True)
class StoredCommand:
    """One message held by the command stream, as published (the body may not even be JSON)."""

    subject: str
    position: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class CommandStream(Protocol):
    """SLMOPS_CMDS seen from a sweep. Every method raises `StreamUnavailable` when JetStream does not answer."""

    @property
    def closed(self) -> bool:
        """True once the connection is closed for good (the process is stopping): sweeping ends."""
        ...

    async def consumers(self) -> Mapping[str, Sequence[str]]:
        """The stream's consumers on the server, by name, with their filter subjects (`>` = no filter)."""
        ...

    async def subjects(self) -> Mapping[str, int]:
        """Every subject that holds messages, with how many."""
        ...

    async def messages(self, subject: str, *, limit: int) -> Sequence[StoredCommand]:
        """The first `limit` messages stored on `subject`, oldest first."""
        ...

    async def dead_letter(self, message: StoredCommand, *, reason: str) -> None:
        """Copy `message` to this service's DLQ with `reason` (idempotent: its id comes from the position)."""
        ...

    async def delete(self, message: StoredCommand) -> None:
        """Remove `message` from the stream (already gone is fine)."""
        ...

    async def reply(self, inbox: str, outcome: CommandOutcome) -> None:
        """Tell a waiting sender the outcome; best effort, never raises."""
        ...
