"""What a use case hands back to the handler layer: the decision, and the messages it implies.

Use cases (`services/<service>/service.py`) return an `Outcome` instead of publishing, so they know
nothing of NATS and a test reads what they decided. The service kit publishes the events and
commands, each with its deterministic id (a repeated publish after a crash is de-duplicated by
JetStream), replies to a waiting sender, and only then acknowledges the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

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
