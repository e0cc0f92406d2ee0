"""OpenTelemetry set-up: OTLP to a collector (docker-compose), or JSON lines in a local file.

The embedded stack has no collector, so spans go to `<home>/traces.jsonl`, one span per line,
appended by every process (each line is written with a single `write` under O_APPEND, so lines
from different processes do not interleave).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

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
    provider = TracerProvider(resource=Resource.create({"service.name": f"slmops-{service}"}))
    if settings.otel_exporter == "file":
        provider.add_span_processor(BatchSpanProcessor(JsonLinesSpanExporter(settings.traces_file)))
    elif settings.otel_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    return provider
