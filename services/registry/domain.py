"""The registry's rules, free of I/O: immutability, idempotent replays, alias history, references.

Replays matter because commands arrive at least once: a command redelivered after a crash must
reach the same decision and re-announce the same event (same deterministic id, so JetStream
drops the copy), while a *different* command with the same bytes is a no-op.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TypeGuard

from services.registry.errors import NotFound, VersionConflict
from shared.messages.envelope import deterministic_id
from shared.messages.registry import AliasChange, AliasRecord, ModelVersionRecord, VariantRecord

LATEST = "latest"


class Decision(Enum):
    CREATE = "create"
    REPLAY = "replay"  # this very command was applied before a crash: announce again, change nothing
    UNCHANGED = "unchanged"  # another command already registered the same bytes


def decide_registration(
    existing: ModelVersionRecord | VariantRecord | None, *, digest: str, command_id: str, what: str
) -> Decision:
    """Whether registering `digest` as `what` (e.g. "tiny 1.0") creates, replays or is a no-op.

    Raises:
        VersionConflict: `what` is taken by other bytes.
    """
    if existing is None:
        return Decision.CREATE
    if existing.artifact.digest != digest:
        raise VersionConflict(what=what, existing_digest=existing.artifact.digest, new_digest=digest)
    return Decision.REPLAY if existing.command_id == command_id else Decision.UNCHANGED


def is_replay(
    existing: ModelVersionRecord | VariantRecord | None, *, command_id: str
) -> TypeGuard[ModelVersionRecord | VariantRecord]:
    """True if `existing` was written by this very command: a redelivery after a crash.

    Checked before anything else, because the first delivery may have consumed the command's
    staging upload before it died: the record, not the upload, is the evidence.
    """
    return existing is not None and existing.command_id == command_id


def apply_alias(
    existing: AliasRecord | None, *, name: str, alias: str, version: str, at: datetime, command_id: str
) -> tuple[AliasRecord, Decision]:
    """The alias record after pointing `alias` at `version`, and whether that changed anything."""
    if existing is not None and any(c.command_id == command_id for c in existing.history):
        return existing, Decision.REPLAY
    if existing is not None and existing.version == version:
        return existing, Decision.UNCHANGED
    previous = existing.version if existing else None
    change = AliasChange(version=version, previous=previous, at=at, command_id=command_id)
    history = [*existing.history, change] if existing else [change]
    return AliasRecord(name=name, alias=alias, version=version, history=history), Decision.CREATE


def resolve_ref(ref: str, *, versions: list[ModelVersionRecord], aliases: list[AliasRecord]) -> ModelVersionRecord:
    """A version for `ref`: `latest`, an alias, or a version string (an exact version wins).

    Raises:
        NotFound: nothing matches.
    """
    if not versions:
        raise NotFound("no versions are registered for this model")
    by_version = {v.version: v for v in versions}
    if ref in by_version:
        return by_version[ref]
    if ref == LATEST:
        return max(versions, key=lambda v: v.registered_at)
    for a in aliases:
        if a.alias == ref and a.version in by_version:
            return by_version[a.version]
    known = sorted(by_version) + sorted(a.alias for a in aliases)
    raise NotFound(f"no version or alias {ref!r}; known: {', '.join(known)}")


def registered_event_id(kind: str, *parts: str) -> str:
    """The deterministic event id for a registration fact, used as `Nats-Msg-Id`."""
    return deterministic_id(kind, *parts)
