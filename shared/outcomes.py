"""What a use case hands back to the handler layer: the decision, and the messages it implies.

Use cases (`services/<service>/service.py`) return an `Outcome` instead of publishing, so they know
nothing of NATS and a test reads what they decided. The service kit publishes the events and
commands, each with its deterministic id (a repeated publish after a crash is de-duplicated by
JetStream), replies to a waiting sender, and only then acknowledges the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from shared.messages.envelope import Message


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What handling one message did.

    Attributes:
        status: `applied` (something changed) or `unchanged` (a repeat: nothing to do).
        events: facts to announce, each with its deterministic event id.
        commands: commands to queue for other services, each with its deterministic command id.
        result: a small summary for the sender's `CommandOutcome`.
    """

    status: Literal["applied", "unchanged"]
    events: Sequence[tuple[Message, str]] = ()
    commands: Sequence[tuple[Message, str]] = ()
    result: dict[str, Any] = field(default_factory=dict)


class Outcomes(Protocol):
    """Where a service's outcomes go: the kit's publisher, which checks each event is one the
    service declared, publishes it with its id, and queues its commands."""

    async def outcome(self, outcome: Outcome) -> None: ...


class EventAnnouncer:
    """Publishes one event at a time through `Outcomes`: for a service's background work (a reconcile
    loop), which has no input message whose outcome could carry it."""

    def __init__(self, outcomes: Outcomes) -> None:
        self._outcomes = outcomes

    async def event(self, event: Message, event_id: str) -> None:
        await self._outcomes.outcome(Outcome(status="applied", events=[(event, event_id)]))
