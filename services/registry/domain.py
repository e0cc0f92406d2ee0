"""The registry's rules, free of I/O: immutability, idempotent replays, alias history, references,
where artifacts may be read from, and how many variants and aliases a model may carry.

Replays matter because commands arrive at least once: a command redelivered after a crash must
reach the same decision and re-announce the same event (same deterministic id, so JetStream
drops the copy), while a *different* command with the same bytes is a no-op.

References resolve by syntax alone (`shared.messages.registry`): `latest`, a version (starts with a
digit) or an alias (starts with a letter), so a version can never shadow an alias.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import TypeGuard

from services.registry.errors import BucketNotAllowed, InvalidCommand, NotFound, VersionConflict
from services.registry.settings import DEFAULT_EVAL_SET_DECOMPRESSED_BYTES
from shared.messages import registry
from shared.messages.common import ObjectRef
from shared.messages.envelope import deterministic_id
from shared.messages.registry import (
    MAX_ALIAS_HISTORY,
    MAX_ALIASES_PER_MODEL,
    MAX_VARIANTS_PER_VERSION,
    AliasChange,
    AliasRecord,
    ModelVersionRecord,
    VariantRecord,
)

LATEST = registry.LATEST


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
    # The record keeps the latest changes only, so it stays bounded however often the alias moves;
    # every change is also an `alias.changed` event. (A redelivery is recognised by its change,
    # which would have to be pushed out by MAX_ALIAS_HISTORY others within one ack wait.)
    history = ([*existing.history, change] if existing else [change])[-MAX_ALIAS_HISTORY:]
    return AliasRecord(name=name, alias=alias, version=version, history=history), Decision.CREATE


def is_version_ref(ref: str) -> bool:
    """True if `ref` names a version (it starts with a digit); otherwise it is `latest` or an alias."""
    return ref[:1].isdigit()


def resolve_ref(ref: str, *, versions: list[ModelVersionRecord], aliases: list[AliasRecord]) -> ModelVersionRecord:
    """A version for `ref`: `latest`, a version (starts with a digit) or an alias (starts with a letter).

    Raises:
        NotFound: nothing matches.
    """
    if not versions:
        raise NotFound("no versions are registered for this model")
    by_version = {v.version: v for v in versions}
    if ref == LATEST:
        return max(versions, key=lambda v: v.registered_at)
    if is_version_ref(ref):
        if ref in by_version:
            return by_version[ref]
        raise NotFound(f"no version {ref!r}; versions: {', '.join(sorted(by_version))}")
    for a in aliases:
        if a.alias == ref and a.version in by_version:
            return by_version[a.version]
    known = sorted(a.alias for a in aliases)
    raise NotFound(f"no alias {ref!r}; aliases: {', '.join(known) or 'none'}")


def check_buckets(refs: list[ObjectRef | None], *, platform: str, allowed: frozenset[str]) -> None:
    """Refuse a command that names a bucket other than the platform's or an allow-listed one.

    The registry's S3 credentials may reach more than the platform's bucket; a command must not be
    able to make it read (and then sign and serve) whatever those credentials reach.

    Raises:
        BucketNotAllowed: naming the bucket and the ones that are allowed.
    """
    for ref in refs:
        if ref is None or ref.bucket is None or ref.bucket == platform or ref.bucket in allowed:
            continue
        may = ", ".join([platform, *sorted(allowed)])
        raise BucketNotAllowed(
            f"the registry reads artifacts only from the buckets {may}, not from {ref.bucket!r}; "
            "an operator allow-lists others with SLMOPS_REGISTRY_ALLOWED_BUCKETS"
        )


def check_variant_room(existing: list[VariantRecord], *, variant: str, what: str) -> None:
    """Refuse a new variant beyond MAX_VARIANTS_PER_VERSION (so `get` of the version stays answerable).

    Raises:
        InvalidCommand: the version has its full complement of variants.
    """
    names = {v.variant for v in existing}
    if variant not in names and len(names) >= MAX_VARIANTS_PER_VERSION:
        raise InvalidCommand(
            f"cannot add variant {variant!r}: {what} has {len(names)} variants, the most a version may have"
        )


def check_alias_room(aliases: list[AliasRecord], *, alias: str, name: str) -> None:
    """Refuse a new alias beyond MAX_ALIASES_PER_MODEL (moving an existing one is always allowed).

    Raises:
        InvalidCommand: the model has its full complement of aliases.
    """
    names = {a.alias for a in aliases}
    if alias not in names and len(names) >= MAX_ALIASES_PER_MODEL:
        raise InvalidCommand(f"cannot add alias {alias!r}: model {name!r} has {len(names)} aliases, the most allowed")


def registered_event_id(kind: str, *parts: str) -> str:
    """The deterministic event id for a registration fact, used as `Nats-Msg-Id`."""
    return deterministic_id(kind, *parts)


@dataclass(frozen=True, kw_only=True)
class Admission:
    """What the registry accepts beyond a command's schema (from `RegistrySettings`)."""

    allowed_buckets: frozenset[str] = frozenset()  # besides the platform's own
    eval_set_max_decompressed_bytes: int = DEFAULT_EVAL_SET_DECOMPRESSED_BYTES
