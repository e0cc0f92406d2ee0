"""OpenTelemetry set-up: OTLP to a collector (docker-compose), or JSON lines in a local file.

The embedded stack has no collector, so spans go to `<home>/traces.jsonl`, one span per line,
appended by every process (each line is written with a single `write` under O_APPEND, so lines
from different processes do not interleave).
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

from shared.settings import Settings


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans to a file as JSON objects, one per line."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(_span_dict(s), default=str) + "\n" for s in spans).encode()
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, lines)
        finally:
            os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def _span_dict(span: ReadableSpan) -> dict[str, object]:
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "trace_id": f"{ctx.trace_id:032x}" if ctx else None,
        "span_id": f"{ctx.span_id:016x}" if ctx else None,
        "parent_id": f"{parent.span_id:016x}" if parent else None,
        "name": span.name,
        "service": span.resource.attributes.get("service.name"),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
    }


def setup_tracing(settings: Settings, *, service: str) -> TracerProvider:
    """Install and return the process's tracer provider for `service`."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"slmops-{service}"}), id_generator=ChosenIds())
    if settings.otel_exporter == "file":
        provider.add_span_processor(BatchSpanProcessor(JsonLinesSpanExporter(settings.traces_file)))
    elif settings.otel_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    return provider


# --- spans of work that outlives a process -----------------------------------------------------
#
# A rollout runs for minutes to days, across restarts and replicas, so its spans cannot be live
# objects held open in memory. Their ids are derived from what they are about (the rollout, the
# wave), so every process agrees on them before they exist: a device's install names the wave
# span as its parent while the wave is still running, and the wave span is recorded, with its
# real start time, when the wave ends.

_CHOSEN: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("slmops_chosen_ids", default=None)


class ChosenIds(IdGenerator):
    """Random ids, except inside `finished_span`, which names the span's own ids."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        chosen = _CHOSEN.get()
        return chosen[1] if chosen else self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        chosen = _CHOSEN.get()
        return chosen[0] if chosen else self._random.generate_trace_id()


@functools.lru_cache(maxsize=4096)
def derived_span_id(*parts: str) -> str:
    """A span id (16 hex digits, never zero) that is a function of `parts`."""
    digest = hashlib.sha256("/".join(("span", *parts)).encode()).hexdigest()
    return digest[:16] if int(digest[:16], 16) else "0000000000000001"


def derived_trace_id(*parts: str) -> str:
    digest = hashlib.sha256("/".join(("trace", *parts)).encode()).hexdigest()
    return digest[:32] if int(digest[:32], 16) else "0" * 31 + "1"


def traceparent(trace_id: str, span_id: str) -> str:
    """The W3C header value naming span `span_id` of trace `trace_id` (sampled)."""
    return f"00-{trace_id}-{span_id}-01"


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace id, span id) of a W3C traceparent; None when absent or malformed."""
    parts = (value or "").split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        if not int(parts[1], 16) or not int(parts[2], 16):
            return None
    except ValueError:
        return None
    return parts[1], parts[2]


def current_traceparent() -> str | None:
    """The current span's traceparent (None outside any recorded span)."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return traceparent(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")


def context_of(value: str | None) -> Context | None:
    """An OpenTelemetry context whose current span is the one `value` names (a remote parent)."""
    ids = parse_traceparent(value)
    if ids is None:
        return None
    span = NonRecordingSpan(
        SpanContext(int(ids[0], 16), int(ids[1], 16), is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    )
    return trace.set_span_in_context(span)


@dataclass(frozen=True)
class FinishedSpan:
    """A span recorded after the fact, with the ids it was known by while it ran."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    start: datetime
    end: datetime
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    error: str | None = None  # a description when it ended badly


def record_finished(span: FinishedSpan, *, tracer_name: str = "slmops") -> None:
    """Export `span` through the process's tracer provider (a no-op without one)."""
    tracer = trace.get_tracer(tracer_name)
    parent = context_of(traceparent(span.trace_id, span.parent_id)) if span.parent_id else None
    with _chosen(int(span.trace_id, 16), int(span.span_id, 16)):
        live = tracer.start_span(
            span.name,
            context=parent if parent is not None else trace.set_span_in_context(trace.INVALID_SPAN),
            start_time=_ns(span.start),
            attributes=dict(span.attributes),
        )
    if span.error is not None:
        live.set_status(Status(StatusCode.ERROR, span.error))
    live.end(end_time=max(_ns(span.end), _ns(span.start)))


@contextmanager
def _chosen(trace_id: int, span_id: int) -> Iterator[None]:
    token = _CHOSEN.set((trace_id, span_id))
    try:
        yield
    finally:
        _CHOSEN.reset(token)


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000_000)
