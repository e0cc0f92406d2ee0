"""An in-memory command stream for the intake's unit tests: messages by position, consumers by name,
and what the sweep dead-lettered, deleted and replied, to read back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from services.intake.errors import StreamUnavailable
from services.intake.ports import StoredCommand
from shared.messages.common import CommandOutcome


@dataclass
class MemoryCommandStream:
    """`CommandStream` over dicts; `down = True` makes every call fail as an unreachable server does."""

    held: dict[int, StoredCommand] = field(default_factory=dict)
    server_consumers: dict[str, list[str]] = field(default_factory=dict)
    dead_letters: list[tuple[StoredCommand, str]] = field(default_factory=list)
    replies: list[tuple[str, CommandOutcome]] = field(default_factory=list)
    down: bool = False
    dlq_down: bool = False
    closed: bool = False
    _next: int = 1

    def publish(self, subject: str, body: bytes = b"{}", headers: Mapping[str, str] | None = None) -> StoredCommand:
        """Store a message as a sender's publish would; returns it with its position."""
        message = StoredCommand(subject=subject, position=self._next, body=body, headers=dict(headers or {}))
        self.held[message.position] = message
        self._next += 1
        return message

    async def consumers(self) -> Mapping[str, Sequence[str]]:
        self._check()
        return {name: list(filters) for name, filters in self.server_consumers.items()}

    async def subjects(self) -> Mapping[str, int]:
        self._check()
        counts: dict[str, int] = {}
        for message in self.held.values():
            counts[message.subject] = counts.get(message.subject, 0) + 1
        return counts

    async def messages(self, subject: str, *, limit: int) -> Sequence[StoredCommand]:
        self._check()
        return [m for _, m in sorted(self.held.items()) if m.subject == subject][:limit]

    async def dead_letter(self, message: StoredCommand, *, reason: str) -> None:
        self._check()
        if self.dlq_down:
            raise StreamUnavailable("DLQ publish timed out")
        if all(m.position != message.position for m, _ in self.dead_letters):  # the DLQ de-duplicates by id
            self.dead_letters.append((message, reason))

    async def delete(self, message: StoredCommand) -> None:
        self._check()
        self.held.pop(message.position, None)

    async def reply(self, inbox: str, outcome: CommandOutcome) -> None:
        if not self.down:
            self.replies.append((inbox, outcome))

    def _check(self) -> None:
        if self.down:
            raise StreamUnavailable("JetStream did not answer")
