"""The versioned envelope every command, event and request travels in.

Why an envelope: consumers in other systems must be able to route and de-duplicate a message
without understanding its payload, and a payload's schema must be able to evolve. So the outer
shape (`type`, `schema_version`, `id`, `time`, `source`, `data`) never changes, and `data` is
validated against the model registered for its `(type, schema_version)`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from functools import cache
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, create_model

from shared.errors import InvalidRequest

ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,128}$"


class Message(BaseModel):
    """Base of every payload: strict (`extra="forbid"`), immutable, and named by its `TYPE`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    TYPE: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int] = 1


DataT = TypeVar("DataT", bound=Message)


class Envelope(BaseModel, Generic[DataT]):
    """The outer, never-changing shape of a message on the bus."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(min_length=1, max_length=128)
    schema_version: int = Field(ge=1)
    id: str = Field(pattern=ID_PATTERN)
    time: AwareDatetime
    source: str = Field(min_length=1, max_length=128)
    data: DataT


class _RawEnvelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(min_length=1, max_length=128)
    schema_version: int = Field(ge=1)
    id: str = Field(pattern=ID_PATTERN)
    time: AwareDatetime
    source: str = Field(min_length=1, max_length=128)
    data: dict[str, Any]


class InvalidMessage(InvalidRequest, ValueError):
    """Bytes that are not a valid message of a known type; the caller's fault, never retried.

    Args:
        reason: what is wrong, phrased for the sender.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_CATALOGUE: dict[tuple[str, int], type[Message]] = {}


def register_message(cls: type[DataT]) -> type[DataT]:
    """Class decorator: make `cls` decodable as `(cls.TYPE, cls.SCHEMA_VERSION)`."""
    key = (cls.TYPE, cls.SCHEMA_VERSION)
    if key in _CATALOGUE and _CATALOGUE[key] is not cls:
        raise TypeError(f"message type {key} registered twice: {_CATALOGUE[key]!r} and {cls!r}")
    _CATALOGUE[key] = cls
    return cls


@cache
def wire_model(model: type[DataT]) -> type[Envelope[DataT]]:
    """The envelope of one payload type, with `type` and `schema_version` pinned to its own.

    This is the wire form of that message: what the JSON Schema export and the AsyncAPI document
    describe, and the class `decode` returns, so a handler annotated with it is documented exactly.
    """
    return create_model(
        f"{model.__name__}Envelope",
        __base__=Envelope[model],  # type: ignore[valid-type]
        __doc__=model.__doc__,
        __module__=model.__module__,
        type=(Literal[model.TYPE], ...),  # type: ignore[arg-type]
        schema_version=(Literal[model.SCHEMA_VERSION], ...),  # type: ignore[arg-type]
    )


def message_types() -> dict[tuple[str, int], type[Message]]:
    """Every known `(type, schema_version)` and its payload model (for schema export and docs)."""
    return dict(_CATALOGUE)


def new_id() -> str:
    """A random message id, for commands and requests (events use `deterministic_id`)."""
    return uuid.uuid4().hex


def deterministic_id(*parts: str) -> str:
    """A full sha256 over `parts`: the same fact always gets the same id, so retries de-duplicate."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def wrap(data: DataT, *, source: str, id: str | None = None, time: datetime | None = None) -> Envelope[DataT]:
    """Put a payload in its envelope."""
    return wire_model(type(data))(
        type=data.TYPE,
        schema_version=data.SCHEMA_VERSION,
        id=id or new_id(),
        time=time or datetime.now(UTC),
        source=source,
        data=data,
    )


def encode(envelope: Envelope[Any]) -> bytes:
    """Serialize an envelope to the JSON bytes that go on the wire."""
    return envelope.model_dump_json().encode()


def decode(raw: bytes, *, expected: tuple[type[Message], ...] = ()) -> Envelope[Any]:
    """Parse wire bytes into an envelope whose `data` is the typed payload.

    Args:
        raw: the message body.
        expected: if given, the payload types this receiver accepts.

    Raises:
        InvalidMessage: not JSON, not an envelope, unknown type/version, or invalid payload.
    """
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidMessage(f"body is not JSON: {exc}") from None
    except RecursionError:
        raise InvalidMessage("body is not JSON this platform reads: nested too deeply") from None
    try:
        env = _RawEnvelope.model_validate(doc)
    except ValidationError as exc:
        raise InvalidMessage(f"not a valid envelope: {_describe(exc)}") from None
    model = _CATALOGUE.get((env.type, env.schema_version))
    if model is None:
        known = sorted({t for t, _ in _CATALOGUE})
        if any(t == env.type for t, _ in _CATALOGUE):
            raise InvalidMessage(f"unsupported schema_version {env.schema_version} for type {env.type!r}")
        raise InvalidMessage(f"unknown message type {env.type!r}; known types: {', '.join(known)}")
    if expected and model not in expected:
        names = ", ".join(sorted(m.TYPE for m in expected))
        raise InvalidMessage(f"message type {env.type!r} is not accepted here; expected one of: {names}")
    try:
        data = model.model_validate(env.data)
    except ValidationError as exc:
        raise InvalidMessage(f"invalid {env.type!r} data: {_describe(exc)}") from None
    # Every field is validated already: construct the typed envelope without validating it twice.
    return wire_model(model).model_construct(
        type=env.type, schema_version=env.schema_version, id=env.id, time=env.time, source=env.source, data=data
    )


def _describe(exc: ValidationError) -> str:
    """One line per problem, naming the field path, so a DLQ reason is readable on its own."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
