"""Whole outcomes or none: what a registration will write and publish is built and checked first.

A command either applies wholly or leaves nothing. So before a record is written, the record and
the event that announces it are built, and each is checked the way its readers will read it: the
record must survive its own JSON round trip (what the KV bucket stores and `get` reads back) and
the event must decode as the message a consumer receives, both within their byte bounds
(`shared.messages.registry.MAX_RECORD_BYTES`, `MAX_EVENT_BYTES`). A `get` reply that would
outgrow `MAX_DETAIL_BYTES` once a variant is added refuses the variant instead. Anything that
fails is an `InvalidCommand` (a rejection, dead-lettered with its reason), raised while nothing
has been written yet. The field caps make these checks redundant; they stay, because they are
what a cap that was forgotten would otherwise cost: a record without its event.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from services.registry.errors import InvalidCommand
from shared.messages.envelope import Message, decode, encode, wrap
from shared.messages.registry import (
    MAX_ALIASES_PER_MODEL,
    MAX_DETAIL_BYTES,
    MAX_EVENT_BYTES,
    MAX_RECORD_BYTES,
    ModelDetail,
    ModelVersionRecord,
    VariantRecord,
)

R = TypeVar("R", bound=BaseModel)
SOURCE = "registry"
_LONGEST_ALIAS = "a" * 63


def build(factory: Callable[[], R], *, what: str) -> R:
    """`factory()`, with a validation failure turned into a rejection that names the field.

    Raises:
        InvalidCommand: the record the command describes is not a valid record.
    """
    try:
        return factory()
    except ValidationError as exc:
        raise InvalidCommand(f"{what} cannot be recorded: {describe(exc)}") from None


def check_record(record: R, *, what: str) -> R:
    """`record`, once it is known to read back as itself and to fit `MAX_RECORD_BYTES`.

    Raises:
        InvalidCommand: it would be stored differently (a number JSON cannot hold) or is too large.
    """
    raw = record.model_dump_json()
    size = len(raw.encode())
    if size > MAX_RECORD_BYTES:
        raise InvalidCommand(f"{what} would be a {size}-byte record; the limit is {MAX_RECORD_BYTES} bytes")
    try:
        again = type(record).model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidCommand(f"{what} would not read back once stored: {describe(exc)}") from None
    if again != record:
        raise InvalidCommand(f"{what} would read back as something else once stored (a value JSON cannot hold)")
    return record


def check_event(event: Message, event_id: str, *, what: str) -> None:
    """Refuse an event that would not reach its consumers whole: too large, or not decodable.

    Raises:
        InvalidCommand: with the reason.
    """
    raw = encode(wrap(event, source=SOURCE, id=event_id, time=datetime.now(UTC)))
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidCommand(f"{what} would be announced in {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}")
    try:
        decode(raw, expected=(type(event),))
    except ValueError as exc:  # InvalidMessage
        raise InvalidCommand(f"{what} would be announced as an event its consumers refuse: {exc}") from None


def check_detail(version: ModelVersionRecord, variants: list[VariantRecord], *, what: str) -> None:
    """Refuse a variant that would make `registry.get` of its version too large to answer.

    Measured with the version's most aliases, each as long as an alias can be.

    Raises:
        InvalidCommand: the reply would exceed `MAX_DETAIL_BYTES`.
    """
    detail = ModelDetail(version=version, variants=variants, aliases=[_LONGEST_ALIAS] * MAX_ALIASES_PER_MODEL)
    size = len(detail.model_dump_json().encode())
    if size > MAX_DETAIL_BYTES:
        raise InvalidCommand(
            f"{what} would make the version's description {size} bytes, over the {MAX_DETAIL_BYTES} "
            "a registry.get reply may carry; register it under another version"
        )


def describe(exc: ValidationError, *, limit: int = 5) -> str:
    """One clause per problem, naming the field path (the first few)."""
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
