"""The intake's rules, pure: which stored commands no service will ever read, and what to tell their senders.

SLMOPS_CMDS is a work queue over `slmops.cmd.>`: JetStream stores a command on any subject under it,
but only a consumer whose filter covers the subject ever takes it off. Filters must not overlap, so
no consumer can take "everything else"; instead the intake looks, every sweep, at the subjects that
hold messages and decides for each one:

  * a consumer on the server covers it                  -> `Claimed`: leave it (its service may be
                                                           down for a minute; its consumer keeps it)
  * only a consumer declared in `shared/topology.py`     -> `Waiting` for the grace period (the service
    covers it, and that consumer is not on the server      may be starting), then `Orphaned`: it is
                                                           not installed
  * nothing covers it                                    -> `Orphaned` at once: no service of this
                                                           platform handles that subject

An orphaned subject's messages are copied to the DLQ with the reason and deleted from the stream.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from shared import subjects
from shared.bus import REPLY_TO
from shared.topology import DurableConsumer, subject_matches

# A server consumer without a filter reads the whole stream.
WHOLE_STREAM = ">"


@dataclass(frozen=True)
class Claimed:
    """A consumer on the server reads this subject."""

    consumer: str


@dataclass(frozen=True)
class Waiting:
    """A declared consumer would read it but is not on the server yet; decide again in `remaining` s."""

    consumer: str
    remaining: float


@dataclass(frozen=True)
class Orphaned:
    """No service will read this subject: dead-letter its messages with `reason`."""

    reason: str


Verdict = Claimed | Waiting | Orphaned


def verdict(
    subject: str,
    *,
    on_server: Mapping[str, Sequence[str]],
    declared: Sequence[DurableConsumer],
    unclaimed_for: float,
    grace: float,
) -> Verdict:
    """What to do with the messages stored on `subject`.

    Args:
        subject: a subject of the command stream that holds messages.
        on_server: the command stream's consumers on the server, by name, with their filters.
        declared: the command consumers `shared/topology.py` declares (any service, installed or not).
        unclaimed_for: seconds since this subject was first seen with no consumer on the server covering it.
        grace: how long a declared consumer may be missing from the server before its commands are orphaned.
    """
    if (consumer := claimant(subject, on_server)) is not None:
        return Claimed(consumer)
    owner = next((c for c in declared if c.covers(subject)), None)
    if owner is None:
        known = ", ".join(sorted({c.filter_subject for c in declared})) or "none"
        return Orphaned(f"no service handles {subject}: no command consumer's filter covers it (declared: {known})")
    if unclaimed_for < grace:
        return Waiting(owner.durable, remaining=grace - unclaimed_for)
    return Orphaned(
        f"no service handles {subject}: its consumer {owner.durable} ({owner.filter_subject}) has not been on "
        f"the server for {grace:g} s; is that service installed?"
    )


def claimant(subject: str, on_server: Mapping[str, Sequence[str]]) -> str | None:
    """The consumer on the server that reads `subject`, if any (the first by name)."""
    for name, filters in sorted(on_server.items()):
        if any(subject_matches(f, subject) for f in filters):
            return name
    return None


def unclaimed_since(previous: Mapping[str, float], unclaimed: Iterable[str], *, now: float) -> dict[str, float]:
    """When each currently unclaimed subject was first seen so: kept from `previous`, `now` for new ones.

    A subject that got a consumer, or holds no message any more, is forgotten, so its grace starts
    afresh if it is ever unclaimed again.
    """
    return {subject: previous.get(subject, now) for subject in unclaimed}


def reply_inbox(headers: Mapping[str, str] | None) -> str | None:
    """The inbox a sender named to hear the command's outcome (`subjects.valid_inbox`: a `Slmops-Reply-To`
    of 7 KB, or with a space or a wildcard, made the server close the intake's connection)."""
    return subjects.valid_inbox((headers or {}).get(REPLY_TO))


def command_id(body: bytes, headers: Mapping[str, str] | None, position: int) -> str:
    """The id the sender knows this command by: the envelope's id, else its Nats-Msg-Id, else its position.

    The body is whatever was published (maybe not JSON at all); only a string `id` is taken from it.
    """
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("id"), str) and doc["id"]:
        return str(doc["id"])[:128]
    return (headers or {}).get("Nats-Msg-Id") or f"stream-seq-{position}"
