"""The versioned envelope every command, event and request travels in.

Why an envelope: consumers in other systems must be able to route and de-duplicate a message
without understanding its payload, and a payload's schema must be able to evolve. So the outer
shape (`type`, `schema_version`, `id`, `time`, `source`, `data`) never changes, and `data` is
validated against the model registered for its `(type, schema_version)`.

Why bounds here: every byte a service receives passes through `decode`, so this is where input that
could hurt a consumer is refused, with a reason, before any model sees it: a body over
`MAX_ENVELOPE_BYTES` (checked before parsing), JSON nested deeper than `MAX_JSON_DEPTH`, `NaN` /
`Infinity` and numbers that overflow (a float to infinity, an integer outside int64), invalid UTF-8
and lone surrogates (which parse, then fail whoever re-encodes them). The same size limit holds on
the way out (`encode`), so nothing the platform sends is refused by its receivers for size.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from datetime import UTC, datetime
from functools import cache
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, create_model

from shared.errors import InvalidRequest

ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,128}$"

# The most bytes one envelope may take (commands, events, requests, device reports). Generous for
# every contract (lists in commands are capped well under it) and a quarter of nats-server's
# default max_payload, so headers and a DLQ entry's provenance always fit beside it. The streams'
# max_msg_size (shared/topology.py) is this plus MAX_HEADER_BYTES.
MAX_ENVELOPE_BYTES = 256 * 1024
# What the headers of one message may add (Nats-Msg-Id, traceparent, Slmops-Reply-To, DLQ provenance).
MAX_HEADER_BYTES = 8 * 1024
# Deeper than any contract nests (envelope > data > profile > recipes > pass > config > ...), far
# under the parser's recursion limit: a deep body is refused with a reason, never a RecursionError.
MAX_JSON_DEPTH = 32
# A reason (DLQ header, command outcome, error reply) is for a human: one screenful at most.
MAX_REASON_CHARS = 2000
# Validation problems listed in one reason; the rest are counted.
MAX_LISTED_ERRORS = 10
_INT64 = 2**63
_SURROGATE = re.compile("[\ud800-\udfff]")


class Message(BaseModel):
    """Base of every payload: strict (`extra="forbid"`), immutable, and named by its `TYPE`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    TYPE: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int] = 1


DataT = TypeVar("DataT", bound=Message)


class Envelope(BaseModel, Generic[DataT]):
    """The outer, never-changing shape of a message on the bus."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    type: str = Field(min_length=1, max_length=128)
    schema_version: int = Field(ge=1)
    id: str = Field(pattern=ID_PATTERN)
    time: AwareDatetime
    source: str = Field(min_length=1, max_length=128)
    data: DataT


class _RawEnvelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    type: str = Field(min_length=1, max_length=128)
    schema_version: int = Field(ge=1)
    id: str = Field(pattern=ID_PATTERN)
    time: AwareDatetime
    source: str = Field(min_length=1, max_length=128)
    data: dict[str, Any]


class InvalidMessage(InvalidRequest, ValueError):
    """Bytes that are not a valid message of a known type; the caller's fault, never retried.

    Args:
        reason: what is wrong, phrased for the sender; cut to `MAX_REASON_CHARS`.
    """

    def __init__(self, reason: str) -> None:
        reason = clip(reason, MAX_REASON_CHARS)
        super().__init__(reason)
        self.reason = reason


class MessageTooLarge(InvalidMessage):
    """A body over `MAX_ENVELOPE_BYTES`, refused before it is parsed (or before it is sent)."""


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, saying so, so a bounded field never hides a cut."""
    if len(text) <= limit:
        return text
    marker = f"... [cut from {len(text)} characters]"
    return text[: max(0, limit - len(marker))] + marker


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
    """Serialize an envelope to the JSON bytes that go on the wire.

    Raises:
        MessageTooLarge: over `MAX_ENVELOPE_BYTES`, which every receiver would refuse.
    """
    body = envelope.model_dump_json().encode()
    if len(body) > MAX_ENVELOPE_BYTES:
        raise MessageTooLarge(
            f"{envelope.type!r} encodes to {len(body)} bytes, over the limit of {MAX_ENVELOPE_BYTES} bytes"
        )
    return body


def decode(
    raw: bytes, *, expected: tuple[type[Message], ...] = (), max_bytes: int = MAX_ENVELOPE_BYTES
) -> Envelope[Any]:
    """Parse wire bytes into an envelope whose `data` is the typed payload.

    Args:
        raw: the message body.
        expected: if given, the payload types this receiver accepts.
        max_bytes: the largest body accepted; a larger one is refused before it is parsed.

    Raises:
        InvalidMessage: too large, not JSON (or JSON this platform refuses: see the module
            docstring), not an envelope, unknown type/version, or invalid payload.
    """
    if len(raw) > max_bytes:
        raise MessageTooLarge(f"body is {len(raw)} bytes, over the limit of {max_bytes} bytes")
    doc = parse_json(raw)
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


def decode_fast(
    raw: bytes, *, expected: tuple[type[Message], ...], max_bytes: int = MAX_ENVELOPE_BYTES
) -> Envelope[Any]:
    """`decode` for a consumer of thousands of messages a second: the same verdicts, six times faster
    on valid input.

    pydantic parses and validates the bytes in one pass against each expected type's wire model; a
    body none of them accepts goes through `decode`, for its verdict and its reason. The verdicts
    agree for types whose numbers are all bounded (the telemetry windows, checked by a property
    test): pydantic's parser, like `parse_json`, refuses NaN, infinities, invalid UTF-8 and lone
    surrogates, and `extra="forbid"` leaves no field where a deep or odd value could hide.
    """
    if len(raw) > max_bytes:
        raise MessageTooLarge(f"body is {len(raw)} bytes, over the limit of {max_bytes} bytes")
    for model in expected:
        try:
            return wire_model(model).model_validate_json(raw)
        except ValidationError:
            continue
    return decode(raw, expected=expected, max_bytes=max_bytes)


def parse_json(raw: bytes) -> Any:
    """Strict JSON: what `json.loads` reads, minus what would hurt a consumer later.

    Raises:
        InvalidMessage: not UTF-8 JSON, `NaN`/`Infinity`, a number out of range, a lone surrogate,
            or nested deeper than `MAX_JSON_DEPTH`.
    """
    try:
        text = raw.decode("utf-8")  # JSON on the wire is UTF-8 (RFC 8259); json.loads would guess UTF-16/32
    except UnicodeDecodeError as exc:
        raise InvalidMessage(f"body is not JSON: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        doc = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_int64)
    except RecursionError:
        raise InvalidMessage("body is not JSON this platform reads: nested too deeply") from None
    except ValueError as exc:
        raise InvalidMessage(f"body is not JSON: {exc}") from None
    _check_shape(doc)
    return doc


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {clip(text, 40)} is out of range")
    return value


def _int64(text: str) -> int:
    # Checked on the digits first: int() of a huge literal is itself slow (and capped by Python).
    if len(text.lstrip("-")) > 19 or not -_INT64 <= (value := int(text)) < _INT64:
        raise ValueError(f"integer {clip(text, 40)} is outside the 64-bit range")
    return value


def _check_shape(doc: Any) -> None:
    """Depth and strings, without recursion (the body is already bounded, so this is linear)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                raise InvalidMessage("body is not JSON this platform reads: a string holds a lone surrogate")
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise InvalidMessage(f"body is not JSON this platform reads: nested deeper than {MAX_JSON_DEPTH} levels")
        items = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        stack.extend((item, depth + 1) for item in items)


def _describe(exc: ValidationError) -> str:
    """One line per problem (the first `MAX_LISTED_ERRORS`), naming the field path, so a DLQ reason
    is readable on its own and a list of a thousand bad items does not become a megabyte of reason."""
    errors = exc.errors(include_url=False, include_input=False)
    parts = []
    for err in errors[:MAX_LISTED_ERRORS]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{clip(loc, 200)}: {clip(err['msg'], 300)}")
    if len(errors) > MAX_LISTED_ERRORS:
        parts.append(f"and {len(errors) - MAX_LISTED_ERRORS} more problems")
    return "; ".join(parts)
