"""Fuzzing through the real bus: generated malformed and hostile messages on every subject a service
consumes, against the real registry, optimizer, intake and telemetry processes and the real nats-server.

Why through the bus and not against `decode`: the unit tests show that `decode` refuses bad input;
what only the running system can show is that every refusal *ends* somewhere (a DLQ entry with its
reason, an error reply, or a publish the server refuses), that nothing a sender controls stops a
consumer or wedges a process, and that nothing malformed leaves a trace in the registry's state.

The subjects are derived from the code, not listed here: each installed service's durable consumers
(`ServiceKit.access()`, filters from `topology.DURABLE_CONSUMERS`) made concrete with every message
type their filter covers and an unknown subject under it (but not consumers of the event stream,
whose only publishers are the services owning the types); the operations each service answers
(`ServiceKit.request_contracts()`, the per-device subject too) and its health check; and command
subjects no consumer covers (the intake's sweep dead-letters those).

Each payload class is one test; it runs a seeded, bounded hypothesis search per subject. Per
example: a publish is stored, or refused by the server for a documented reason (over the stream's
`max_msg_size`, over `max_payload`, no stream for the subject); a request is answered with
`invalid_request` (never silence, never `internal`). Per class, after the search: every stored
message reached its service's DLQ with a reason (matched by the marker each body carries), every
service still answers its health check, and the registry's listing, its `models` bucket and the
event stream are as before.

Everything published is invalid for its subject by construction: a generated body that the
platform's own `decode` accepts is discarded (`assume`), so a DLQ entry is always the right end.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import string
import threading
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import nats
import pytest
from hypothesis import HealthCheck, Phase, assume, example, given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError, NoRespondersError
from nats.js.api import StreamConfig
from nats.js.errors import APIError, NoStreamResponseError

from shared import bus, dlq, subjects, topology
from shared.clients import RegistryClient, health
from shared.discovery import load_service, service_names
from shared.errors import RPC_ERRORS, InvalidRequest
from shared.kit import ServiceKit
from shared.messages.envelope import (
    ID_PATTERN,
    MAX_ENVELOPE_BYTES,
    MAX_JSON_DEPTH,
    InvalidMessage,
    Message,
    decode,
    message_types,
)
from shared.messages.rpc import RpcReply
from shared.settings import Settings
from tests.conftest import ServiceRunner
from tests.unit.shared.messages.test_contracts import SAMPLES

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., None])
# Hypothesis examples per subject and payload class: about 20 subjects x 7 classes x this.
EXAMPLES_PER_SUBJECT = 8
# Bounds on waits for what must happen (a hang's limit, not a timing assertion).
REPLY_WAIT = 10.0
DLQ_WAIT = 60.0
RUN = uuid.uuid4().hex[:6]
MARKER = re.compile(rf"FZ{RUN}N\d{{6}}Z".encode())
_counter = itertools.count()
# Header values a sender can put on the wire (no CR/LF, which would be a protocol error of our own).
HEADER_TEXT = st.text(alphabet=string.ascii_letters + string.digits + " .:;-_/*>$=+,!?~", max_size=300)


def new_marker() -> str:
    """A token unique to one published message, valid as an id, a source and a subject token."""
    return f"FZ{RUN}N{next(_counter):06d}Z"


# --- the subjects services consume, from their declarations ----------------------------------------


Kind = Literal["durable", "orphan", "rpc", "health"]


@dataclass(frozen=True)
class Target:
    """One subject a service consumes, and what a message there must end as.

    Attributes:
        pattern: the subject, with `{marker}` where a per-message token goes (a device id, an unknown
            subject's last token) so a DLQ entry names it; `{orphan}` for a generated unknown command.
        service: whose DLQ (durable, orphan) or who answers (rpc, health).
        accepts: the types the consumer takes there; a body `decode` accepts as one of them is not sent.
        own: the type whose subject this is (None: an unknown subject), for "right type, bad data".
        stream: the stream that stores it (None: core request/reply, or no stream covers it).
    """

    pattern: str
    kind: Kind
    service: str
    accepts: tuple[type[Message], ...]
    own: type[Message] | None
    stream: StreamConfig | None

    def __str__(self) -> str:
        return f"{self.kind}:{self.pattern}"

    __repr__ = __str__


def _kits() -> dict[str, ServiceKit[Any]]:
    return {name: load_service(name)() for name in service_names()}


def _stream_for(subject: str) -> StreamConfig | None:
    for stream in topology.STREAMS:
        if any(topology.subject_matches(s, subject) for s in stream.subjects or []):
            return stream
    return None


def _concrete(message_type: type[Message], stream: str) -> str:
    """Where a message of this type travels on `stream`, `{marker}` for a device id."""
    if stream == topology.CMDS_STREAM:
        return subjects.command(message_type)
    return subjects.followed(message_type).replace("*", "{marker}")


def derive_targets() -> list[Target]:
    """Every subject the installed services consume, from their kit declarations (see the module doc)."""
    kits = _kits()
    declared = {c.durable: c for c in topology.DURABLE_CONSUMERS}
    catalogue = list(message_types().values())
    targets: list[Target] = []
    command_filters: list[topology.DurableConsumer] = []
    for name, kit in kits.items():
        # The consumers the service runs: `access()` names every one it declares, including one a
        # setting leaves off (the optimizer's auto-profiles), whose messages nobody would take.
        running = {c.durable for c in kit.running_consumers()}
        for access in kit.access().consumers:
            if access.durable not in running or not kit.dead_letters(access.durable):
                continue  # not run, or another service is the stream's validator of record
            consumer = declared[access.durable]
            if consumer.stream == topology.EVENTS_STREAM:
                # Events are published only by the service that owns their types (the server refuses
                # anyone else on slmops.evt.<type>: test_permissions), so a follower's input is another
                # service's output, validated as it was built. Fuzzing it would write hostile
                # "events" into the stream every other system reads as the platform's history.
                continue
            if consumer.stream == topology.CMDS_STREAM:
                command_filters.append(consumer)
            covered = {t: _concrete(t, consumer.stream) for t in catalogue}
            accepts = tuple(t for t, s in covered.items() if consumer.covers(s.format(marker="x")))
            for message_type in accepts:
                subject = covered[message_type]
                targets.append(
                    Target(subject, "durable", name, accepts, message_type, _stream_for(subject.format(marker="x")))
                )
            if consumer.filter_subject.endswith(".>"):  # a subject under the filter that no type has
                unknown = consumer.filter_subject.replace("*", "{marker}").removesuffix(">") + "fuzz.{marker}"
                stream = _stream_for(unknown.format(marker="x"))
                targets.append(Target(unknown, "durable", name, accepts, None, stream))
        for rpc in kit.request_contracts():
            own = rpc.request
            targets.append(Target(rpc.subject, "rpc", name, (own,), own, None))
            if rpc.per_device:
                targets.append(Target(rpc.subject + ".{marker}", "rpc", name, (own,), own, None))
        targets.append(Target(subjects.health(name), "health", name, (), None, None))
    assert command_filters, "no service consumes commands: nothing for the intake's sweep to leave alone"
    # Command subjects no consumer reads: the intake dead-letters them (its sweep), whatever the body.
    targets.append(Target("{orphan}", "orphan", "intake", (), None, _stream_for(f"{subjects.CMD}.x")))
    return targets


TARGETS = derive_targets()
COMMAND_FILTERS = [c for c in topology.DURABLE_CONSUMERS if c.stream == topology.CMDS_STREAM]
UNCOVERED_COMMANDS = sorted(
    subjects.command(t)
    for t in message_types().values()
    if not any(c.covers(subjects.command(t)) for c in COMMAND_FILTERS)
)


def orphan_subjects() -> st.SearchStrategy[str]:
    """Command subjects no consumer covers: real types no service takes yet, and invented ones."""
    invented = st.from_regex(r"\A[a-z0-9_-]{1,16}(\.[a-z0-9_-]{1,16}){0,3}\Z").map(lambda s: f"{subjects.CMD}.{s}")
    return st.one_of(st.sampled_from(UNCOVERED_COMMANDS), invented).filter(
        lambda s: not any(c.covers(s) for c in COMMAND_FILTERS)
    )


# --- hostile payloads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One message to publish: where, what, and with which headers."""

    target: Target
    subject: str
    marker: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.target} on {self.subject}: {len(self.body)} bytes {self.body[:160]!r} headers={self.headers!r}"[
            :600
        ]


def _sample(message_type: type[Message] | None) -> Message:
    return SAMPLES[(message_type or next(iter(message_types().values()))).TYPE]


def _envelope(message: Message, marker: str) -> dict[str, Any]:
    """A well-formed envelope's fields, the marker first (in `id`, then `source`) so that even a DLQ
    copy cut to fit still carries it."""
    return {
        "id": marker,
        "source": marker,
        "type": message.TYPE,
        "schema_version": message.SCHEMA_VERSION,
        "time": "2026-01-01T00:00:00Z",
        "data": message.model_dump(mode="json"),
    }


def _dumps(doc: Any, raw: dict[str, str] | None = None) -> bytes:
    """JSON text, with placeholders replaced by raw text JSON encoders will not write (NaN, 1e999, ...)."""
    text = json.dumps(doc, ensure_ascii=False, allow_nan=True)
    for placeholder, literal in (raw or {}).items():
        text = text.replace(json.dumps(placeholder), literal)
    return text.encode("utf-8", errors="surrogatepass")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)


@st.composite
def random_bytes(draw: st.DrawFn, marker: str, target: Target) -> bytes:
    return marker.encode() + draw(st.binary(max_size=2048))


@st.composite
def invalid_utf8(draw: st.DrawFn, marker: str, target: Target) -> bytes:
    bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82", b"\x80"]))
    head = _dumps(_envelope(_sample(target.own), marker))
    cut = draw(st.integers(min_value=len(marker) + 10, max_value=len(head) - 1))
    return head[:cut] + bad + head[cut:]


@st.composite
def wrong_shape(draw: st.DrawFn, marker: str, target: Target) -> bytes:
    value = draw(JSON_VALUES)
    shape = draw(st.sampled_from(["list", "object", "string", "data-only", "envelope-of-junk"]))
    if shape == "list":
        return _dumps([marker, value])
    if shape == "object":
        return _dumps({"marker": marker, "value": value})
    if shape == "string":
        return _dumps(marker + str(value))
    if shape == "data-only":  # a payload without its envelope
        return _dumps({"id": marker} | _sample(target.own).model_dump(mode="json"))
    return _dumps({"id": marker, "type": marker, "data": value})


OTHER_TYPE_NAMES = sorted({t for t, _ in message_types()})


@st.composite
def bad_envelope(draw: st.DrawFn, marker: str, target: Target) -> bytes:
    """A right envelope with one envelope field wrong (or missing, or one too many)."""
    doc = _envelope(_sample(target.own), marker)
    accepted = {t.TYPE for t in target.accepts}
    wrong: dict[str, st.SearchStrategy[Any]] = {
        "type": st.one_of(
            st.sampled_from([t for t in OTHER_TYPE_NAMES if t not in accepted]), st.text(max_size=200), JSON_VALUES
        ),
        "schema_version": st.one_of(st.sampled_from([0, -1, 2, 99, 2**31, 2**63 - 1, "1.0", "one"]), JSON_VALUES),
        "id": st.one_of(st.text(max_size=300).filter(lambda s: not re.fullmatch(ID_PATTERN, s)), JSON_VALUES),
        "time": st.one_of(
            st.sampled_from(["2026-01-01T00:00:00", "yesterday", "", "2026-13-45T99:99:99Z", "9999-12-31T23:59:60Z"]),
            st.text(max_size=40),
            JSON_VALUES,
        ),
        "source": st.one_of(st.just(""), st.text(min_size=129, max_size=400), JSON_VALUES),
        "data": JSON_VALUES,
    }
    name = draw(st.sampled_from([*sorted(wrong), "<missing>", "<extra>"]))
    if name == "<missing>":
        del doc[draw(st.sampled_from(sorted(set(doc) - {"id"})))]
    elif name == "<extra>":
        doc[draw(st.text(min_size=1, max_size=20).filter(lambda k: k not in doc))] = draw(JSON_VALUES)
    else:
        doc[name] = draw(wrong[name])
        if name == "id":  # keep the marker in the body
            doc["source"] = marker
    return _dumps(doc)


@st.composite
def mutated_data(draw: st.DrawFn, marker: str, target: Target) -> bytes:
    """An envelope of the subject's own type whose data is wrong: an extra field, a wrong type, a
    literal JSON encoders never write, a huge number or string, deep nesting, a very long list."""
    doc = _envelope(_sample(target.own), marker)
    data: dict[str, Any] = doc["data"]
    fields = sorted(data) or ["x"]
    key = draw(st.sampled_from(fields))
    mutation = draw(
        st.sampled_from(
            ["extra", "wrong-type", "null", "missing", "literal", "huge-number", "huge-string", "deep", "long-list"]
        )
    )
    raw: dict[str, str] = {}
    placeholder = f"@@{marker}@@"
    if mutation == "extra":
        data[draw(st.text(min_size=1, max_size=30).filter(lambda k: k not in data))] = draw(JSON_VALUES)
    elif mutation == "wrong-type":
        data[key] = draw(JSON_VALUES)
    elif mutation == "null":
        data[key] = None
    elif mutation == "missing":
        data.pop(key, None)
    elif mutation == "literal":
        data[key] = placeholder
        raw[placeholder] = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", '"\\udc80"', '"\\ud800x"']))
    elif mutation == "huge-number":
        data[key] = placeholder
        digits = draw(st.integers(min_value=19, max_value=5000))
        raw[placeholder] = draw(st.sampled_from(["9" * digits, "-" + "9" * digits, f"1e{digits}", f"-1.5e{digits}"]))
    elif mutation == "huge-string":
        base = len(_dumps(doc))
        size = draw(st.sampled_from(_sizes(target)))
        char = draw(st.sampled_from(["x", "é", "\u2028", "\x00", "💥"]))
        width = len(json.dumps(char, ensure_ascii=False).encode()) - 2
        data[key] = char * max(1, (size - base) // width)
    elif mutation == "deep":
        depth = draw(st.sampled_from([MAX_JSON_DEPTH - 4, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 1000, 100_000]))
        data[key] = placeholder
        raw[placeholder] = "[" * depth + "]" * depth
    else:
        count = draw(st.sampled_from([100, 1000, 10_000, 60_000]))
        data[key] = [draw(JSON_VALUES)] * count
    return _dumps(doc, raw)


def _sizes(target: Target) -> list[int]:
    """Body sizes at the limits a message meets on its way: the envelope's, the stream's, the server's."""
    sizes = [MAX_ENVELOPE_BYTES - 64, MAX_ENVELOPE_BYTES, MAX_ENVELOPE_BYTES + 1, topology.DEVICE_MESSAGE_MAX_BYTES + 1]
    if target.stream is not None and target.stream.max_msg_size:
        sizes += [target.stream.max_msg_size - 256, target.stream.max_msg_size + 1]
    return sizes


MAX_PAYLOAD = 1024 * 1024  # nats-server's default; checked against the connection in the test


@st.composite
def oversized(draw: st.DrawFn, marker: str, target: Target) -> bytes:
    """A well-formed envelope padded with JSON whitespace to a size at or past one of the limits."""
    body = _dumps(_envelope(_sample(target.own), marker))
    size = draw(st.sampled_from([*_sizes(target), MAX_PAYLOAD - 4096, MAX_PAYLOAD - 512, MAX_PAYLOAD + 1]))
    size += draw(st.sampled_from([-1, 0, 1]))
    return body[:-1] + b" " * max(0, size - len(body)) + b"}"


# Where a `Slmops-Reply-To` may point: over the server's control-line limit, wildcards, spaces that
# would split a PUB line, real subjects (events, commands, a KV key, the JetStream API, a DLQ), and
# someone else's well-formed inbox. `{marker}` is replaced by the message's marker.
HOSTILE_REPLY_TO = (
    "_INBOX." + "a" * 7000,
    "_INBOX.>",
    "_INBOX.*",
    "_INBOX.a b",
    "_INBOX.a b c d",
    "_INBOX.",
    "",
    subjects.event(type(SAMPLES["model.registered"])),
    subjects.command(type(SAMPLES["model.register"])),
    f"$KV.{topology.KV_MODELS}.{{marker}}",
    f"$JS.API.STREAM.DELETE.{topology.CMDS_STREAM}",
    subjects.dlq("registry"),
    "_INBOX.operator.someone-else.{marker}",  # well-formed, someone else's: a reply it may get
)


def hostile_headers(marker: str) -> st.SearchStrategy[dict[str, str]]:
    """Headers a sender controls: a huge Nats-Msg-Id, a reply inbox pointing anywhere, junk."""
    reply_to = st.one_of(st.sampled_from([r.format(marker=marker) for r in HOSTILE_REPLY_TO]), HEADER_TEXT)
    return st.fixed_dictionaries(
        {},
        optional={
            "Nats-Msg-Id": st.integers(min_value=0, max_value=8000).map(lambda n: marker + "x" * n),
            bus.REPLY_TO: reply_to,
            "traceparent": st.one_of(st.just("00-" + "f" * 5000), HEADER_TEXT),
            "tracestate": HEADER_TEXT,
            "X-Fuzz": st.integers(min_value=0, max_value=6000).map(lambda n: "j" * n),
        },
    )


Payload = Callable[[str, Target], st.SearchStrategy[bytes]]
PAYLOADS: dict[str, Payload] = {
    "random-bytes": random_bytes,
    "invalid-utf8": invalid_utf8,
    "wrong-shape": wrong_shape,
    "bad-envelope": bad_envelope,
    "mutated-data": mutated_data,
    "oversized": oversized,
}


@st.composite
def with_headers(draw: st.DrawFn, marker: str, target: Target) -> tuple[bytes, dict[str, str]]:
    """Any of the bodies above, or (where any body is dead-lettered) a valid one, with hostile headers."""
    choices = list(PAYLOADS.values())
    if target.kind == "orphan":  # the intake's sweep takes anything off an unread subject
        choices.append(lambda m, t: st.just(_dumps(_envelope(_sample(None), m))))
    body = draw(st.sampled_from(choices).flatmap(lambda payload: payload(marker, target)))
    return body, draw(hostile_headers(marker))


CLASSES = [*PAYLOADS, "hostile-headers"]


@st.composite
def cases(draw: st.DrawFn, target: Target, payload_class: str) -> Case:
    marker = new_marker()
    if target.kind == "orphan":
        subject = draw(orphan_subjects())
    else:
        subject = target.pattern.format(marker=marker)
    if payload_class == "hostile-headers":
        body, headers = draw(with_headers(marker, target))
    else:
        body, headers = draw(PAYLOADS[payload_class](marker, target)), {}
    if target.kind in ("durable", "orphan"):
        headers.setdefault("Nats-Msg-Id", marker)  # unique: JetStream never de-duplicates one away
    case = Case(target=target, subject=subject, marker=marker, body=body, headers=headers)
    assume(target.kind in ("orphan", "health") or not _decodes(case))
    return case


def _decodes(case: Case) -> bool:
    """True if the platform's own decoder accepts the body as one of the subject's types (not sent:
    every message here must be one its consumer refuses)."""
    try:
        decode(case.body, expected=case.target.accepts)
    except InvalidMessage:
        return False
    return True


# --- the bus, from hypothesis's synchronous examples -------------------------------------------------


class Loop:
    """An event loop in a thread: hypothesis runs examples synchronously, the bus is asyncio."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@dataclass
class DeadLetters:
    """Every DLQ entry published while a class runs, by the markers its body or subject holds."""

    entries: dict[str, dict[str, str]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_message(self, msg: Msg) -> None:
        headers = dict(msg.headers or {})
        found = MARKER.findall(msg.data) + MARKER.findall(headers.get(dlq.ORIGINAL_SUBJECT, "").encode())
        for marker in found:
            self.entries.setdefault(marker.decode(), headers | {"_dlq_subject": msg.subject})
        self.arrived.set()

    async def wait_for(self, markers: set[str], timeout: float) -> set[str]:
        """The markers still missing after waiting up to `timeout` for all of them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while markers - set(self.entries) and loop.time() < deadline:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), max(0.01, min(1.0, deadline - loop.time())))
            except TimeoutError:
                pass
        return markers - set(self.entries)


@dataclass(frozen=True)
class State:
    """What malformed input must never change."""

    listing: list[dict[str, Any]]
    model_keys: frozenset[str]
    last_event: int


async def snapshot(nc: Client) -> State:
    js = nc.jetstream()
    listing = await RegistryClient(nc, source="fuzz").list_models()
    # Every key ever written is a subject of the bucket's stream: exact, unlike listing keys through an
    # ordered consumer (which came back short once, on a loaded machine).
    bucket = await js.stream_info(f"KV_{topology.KV_MODELS}", subjects_filter=f"$KV.{topology.KV_MODELS}.>")
    keys = frozenset(s.removeprefix(f"$KV.{topology.KV_MODELS}.") for s in (bucket.state.subjects or {}))
    events = await js.stream_info(topology.EVENTS_STREAM)
    return State(
        listing=[m.model_dump(mode="json") for m in listing], model_keys=keys, last_event=events.state.last_seq
    )


def header_size(headers: dict[str, str]) -> int:
    return dlq.header_bytes(headers) if headers else 0


async def refused_by_the_server(settings: Settings, case: Case) -> None:
    """Send what nats-py lets through but the server refuses (a body under `max_payload` whose headers
    take it over) on a connection of its own: the server closes it, saying why, and nothing is stored."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    conn = await nats.connect(
        settings.nats_url,
        name="fuzz-oversized",
        allow_reconnect=False,
        error_cb=on_error,
        **bus.credentials_options(settings),
    )
    try:
        with contextlib.suppress(Exception):
            await conn.publish(case.subject, case.body, headers=case.headers or None)
            await conn.flush(timeout=int(REPLY_WAIT))
        for _ in range(int(REPLY_WAIT / 0.05)):
            if conn.is_closed:
                break
            await asyncio.sleep(0.05)
        # The server says "maximum payload exceeded" and closes; nats-py does not always pass the
        # -ERR on before it sees the socket close, so the closed connection is the evidence.
        assert conn.is_closed, (errors, case.describe())
    finally:
        await conn.close()


def over_max_payload(nc: Client, case: Case) -> bool:
    """True if body and headers together are more than the server takes (nats-py checks the body only)."""
    return len(case.body) <= nc.max_payload < len(case.body) + header_size(case.headers)


async def publish_durable(nc: Client, settings: Settings, case: Case) -> bool:
    """Publish to JetStream; True if stored (a DLQ entry must follow), False for a documented refusal."""
    size = len(case.body) + header_size(case.headers)
    stream = case.target.stream
    if over_max_payload(nc, case):
        await refused_by_the_server(settings, case)
        return False
    try:
        ack = await nc.jetstream().publish(case.subject, case.body, headers=case.headers or None, timeout=REPLY_WAIT)
    except MaxPayloadError:
        assert size > nc.max_payload, f"refused under max_payload: {case.describe()}"
        return False  # the client refuses what the server would: never sent
    except (NoRespondersError, NoStreamResponseError):
        assert stream is None, f"no stream answered on a stored subject: {case.describe()}"
        return False  # no stream stores this subject: nothing to consume
    except APIError as exc:
        too_large = "maximum" in (exc.description or "").lower() or exc.err_code == 10054
        assert too_large and stream is not None and size > (stream.max_msg_size or 0), (
            f"refused by JetStream for {exc!r}: {case.describe()}"
        )
        return False  # over the stream's max_msg_size: refused to its sender, never stored
    assert stream is not None and ack.stream == stream.name, f"stored in {ack.stream}: {case.describe()}"
    assert not ack.duplicate, f"de-duplicated away: {case.describe()}"
    assert size <= (stream.max_msg_size or size), f"stored over the stream's max_msg_size: {case.describe()}"
    return True


async def request(nc: Client, settings: Settings, case: Case) -> None:
    """A request is always answered: health with ready, an operation with `invalid_request`."""
    if over_max_payload(nc, case):
        await refused_by_the_server(settings, case)
        return
    try:
        msg = await nc.request(case.subject, case.body, timeout=REPLY_WAIT, headers=case.headers or None)
    except MaxPayloadError:
        assert len(case.body) + header_size(case.headers) > nc.max_payload, case.describe()
        return
    except TimeoutError as exc:
        raise AssertionError(f"no reply within {REPLY_WAIT}s: {case.describe()}") from exc
    reply = RpcReply[Any].model_validate_json(msg.data)
    if case.target.kind == "health":
        assert reply.ok and reply.result and reply.result["ready"], f"health said {msg.data!r}: {case.describe()}"
        return
    assert not reply.ok and reply.error is not None, f"malformed request answered ok: {case.describe()}"
    assert reply.error.code in RPC_ERRORS, reply.error
    assert reply.error.code == InvalidRequest.code, f"answered {reply.error}: {case.describe()}"
    assert reply.error.message, case.describe()


def _every_reply_to(target: Target, *, enabled: bool) -> Callable[[F], F]:
    """Explicit examples: each of `HOSTILE_REPLY_TO` on a message to a durable or unread command subject
    (where a reply would be sent), so each one is tried whatever the search draws."""

    def decorate(test: F) -> F:
        if not enabled or target.kind not in ("durable", "orphan"):
            return test
        for reply_to in HOSTILE_REPLY_TO:
            marker = new_marker()
            pattern = f"{subjects.CMD}.fuzz.{{marker}}" if target.kind == "orphan" else target.pattern
            case = Case(
                target=target,
                subject=pattern.format(marker=marker),
                marker=marker,
                body=marker.encode() + b" is not a message",
                headers={bus.REPLY_TO: reply_to.format(marker=marker), "Nats-Msg-Id": marker},
            )
            test = example(case=case)(test)
        return test

    return decorate


# --- the services ------------------------------------------------------------------------------------


@pytest.fixture
def loop() -> Iterator[Loop]:
    runner = Loop()
    yield runner
    runner.close()


def test_every_installed_service_and_consumed_subject_is_fuzzed() -> None:
    """The derivation covers what the services declare (a guard against fuzzing nothing)."""
    kinds = {t.kind for t in TARGETS}
    assert kinds == {"durable", "orphan", "rpc", "health"}
    assert {t.service for t in TARGETS if t.kind == "health"} == set(service_names())
    durable = {t.pattern for t in TARGETS if t.kind == "durable"}
    assert subjects.command(type(SAMPLES["model.register"])) in durable
    assert subjects.command(type(SAMPLES["optimize.request"])) in durable
    assert subjects.DEVICE_HELLO.format(device_id="{marker}") in durable
    assert subjects.DEVICE_TELEMETRY.format(device_id="{marker}") in durable
    assert UNCOVERED_COMMANDS, "every command type has a consumer: add an invented one"


@pytest.mark.parametrize("payload_class", CLASSES)
def test_hostile_messages_end_in_the_dlq_or_a_documented_refusal(
    payload_class: str,
    settings: Settings,
    running_registry: ServiceRunner,
    running_optimizer: ServiceRunner,
    running_intake: ServiceRunner,
    running_telemetry: ServiceRunner,
    running_rollout: ServiceRunner,
    running_blueprints: ServiceRunner,
    loop: Loop,
) -> None:
    nc: Client = loop.run(bus.connect(settings, name=f"fuzz-{payload_class}"))
    try:
        assert nc.max_payload == MAX_PAYLOAD, "the size strategies assume the server's default max_payload"
        letters = DeadLetters()
        loop.run(nc.subscribe(f"{subjects.DLQ}.>", cb=letters.on_message))
        before = loop.run(snapshot(nc))
        expected: dict[str, Case] = {}
        tried: Counter[str] = Counter()  # examples sent per subject pattern
        refused: Counter[str] = Counter()  # of which the server refused (documented)

        for target in TARGETS:

            @seed(zlib.crc32(f"{target}/{payload_class}".encode()))
            @hypothesis_settings(
                max_examples=EXAMPLES_PER_SUBJECT,
                deadline=None,
                database=None,
                phases=(Phase.explicit, Phase.generate),
                suppress_health_check=[
                    HealthCheck.too_slow,
                    HealthCheck.filter_too_much,
                    HealthCheck.data_too_large,
                    HealthCheck.large_base_example,
                ],
            )
            @given(case=cases(target, payload_class))
            @_every_reply_to(target, enabled=payload_class == "hostile-headers")
            def one(case: Case) -> None:
                tried[str(case.target)] += 1
                if case.target.kind in ("rpc", "health"):
                    loop.run(request(nc, settings, case))
                elif loop.run(publish_durable(nc, settings, case)):
                    expected[case.marker] = case
                else:
                    refused[str(case.target)] += 1

            one()

        # Every subject got hostile messages, and messages were stored: not a search that sent nothing.
        assert set(tried) == {str(t) for t in TARGETS}, sorted({str(t) for t in TARGETS} - set(tried))
        assert expected, f"nothing was stored: {dict(refused)}"
        missing = loop.run(letters.wait_for(set(expected), DLQ_WAIT))
        assert not missing, "no DLQ entry for:\n" + "\n".join(expected[m].describe() for m in sorted(missing))
        for marker, case in expected.items():
            entry = letters.entries[marker]
            reason = entry.get(dlq.REASON, "")
            assert reason, f"DLQ entry without a reason: {case.describe()}"
            assert entry.get(dlq.SERVICE) == case.target.service, (entry, case.describe())
            # Malformed input is rejected as such, never handled as a failure and retried.
            assert not reason.startswith(("gave up after", "cannot decode")), (reason, case.describe())

        for name in service_names():
            assert loop.run(health(nc, name, timeout=5)), f"{name} stopped answering its health check"
        after = loop.run(snapshot(nc))
        assert after.listing == before.listing, "the registry's listing changed"
        assert after.model_keys == before.model_keys, f"new records: {sorted(after.model_keys - before.model_keys)}"
        assert after.last_event == before.last_event, "malformed input produced events"
    finally:
        loop.run(nc.close())
