"""`slmops trace ROLLOUT_ID [--json]`: a rollout's trace, from the embedded stack's span file.

Every process of the embedded stack appends its spans to `<home>/traces.jsonl`; the rollout
service's carry `slmops.rollout_id`, and so do the devices' `device.install` spans, which continue
the trace from the desired state's `traceparent`. This command reads that file
(`shared.trace_tree`) and prints each trace of the rollout as a tree. With docker-compose the spans
go over OTLP to Jaeger instead, and the command says where to look.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Group
from rich.text import Text
from rich.tree import Tree

from shared.cli.common import JsonOption, console, fail, print_json
from shared.trace_tree import Collapsed, SpanNode, SpanRecord, TraceTree, collapse, format_duration

if TYPE_CHECKING:
    from shared.settings import Settings

JAEGER_UI = "http://localhost:16686"
_ROLLOUT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# (attribute, label): what a line shows of a span, in this order, when the span has it. The rollout
# service's spans (`rollout`, `rollout.wave`, `rollout.gate`, the desired-state writes) and the
# devices' (`device.install` and its steps) name these.
SALIENT: tuple[tuple[str, str], ...] = (
    ("slmops.model", "model"),
    ("slmops.version", "version"),
    ("slmops.state", "state"),
    ("slmops.wave", "wave"),
    ("slmops.percent", "percent"),
    ("slmops.metric", "metric"),
    ("slmops.device_class", "class"),
    ("slmops.device_id", "device"),
    ("slmops.devices", "devices"),
    ("slmops.observed", "observed"),
    ("slmops.samples", "samples"),
    ("slmops.verdict", "verdict"),
    ("slmops.outcome", "outcome"),
    ("slmops.attempt", "attempt"),
    ("slmops.reason", "reason"),
)
REASON_CHARS = 80


def trace(
    rollout_id: str = typer.Argument(..., help="The rollout whose trace to show."),
    as_json: bool = JsonOption,
) -> None:
    """Print ROLLOUT_ID's trace as a tree: waves, gates, desired-state writes, each device's install.

    Reads the embedded stack's span file (<home>/traces.jsonl); siblings of one name beyond a few
    are summarised (--json prints every span). With docker-compose the trace is in Jaeger
    (http://localhost:16686).
    """
    from shared.settings import Settings
    from shared.trace_tree import read_rollout_spans, rollout_traces

    settings = Settings()
    if not _ROLLOUT_ID.match(rollout_id):
        fail(f"{rollout_id!r} is not a rollout id (1-64 of A-Z, a-z, 0-9, _ and -)")
    if settings.otel_exporter == "otlp":
        fail(
            f"spans go over OTLP to {settings.otlp_endpoint} (SLMOPS_OTEL_EXPORTER=otlp), not to a file; "
            + _jaeger(settings, rollout_id)
        )
    path = settings.traces_file
    try:
        read = read_rollout_spans(path, rollout_id)
    except FileNotFoundError:
        off = " (tracing is off here: SLMOPS_OTEL_EXPORTER=none)" if settings.otel_exporter == "none" else ""
        fail(
            f"no span file at {path}{off}; the embedded stack (slmops up) writes one, "
            f"with docker-compose open Jaeger at {JAEGER_UI}"
        )
    except OSError as exc:
        fail(f"cannot read the span file {path}: {exc}")
    traces = rollout_traces(read.spans, rollout_id)
    if not traces:
        fail(
            f"no span in {path} names rollout {rollout_id} (attribute slmops.rollout_id); spans are "
            "written when they end, so a rollout that has only just started may have none yet"
        )
    if as_json:
        print_json(traces_json(traces, rollout_id=rollout_id, path=path, unreadable=read.unreadable))
    else:
        console.print(render_traces(traces, rollout_id=rollout_id, unreadable=read.unreadable))


# --- rendering ------------------------------------------------------------------------------------


def render_traces(traces: Sequence[TraceTree], *, rollout_id: str, unreadable: int = 0) -> Group:
    """Every trace of the rollout as a rich tree, large fan-outs collapsed (`trace_tree.collapse`)."""
    parts: list[Any] = [render_trace(t, rollout_id=rollout_id) for t in traces]
    if unreadable:
        parts.append(Text(f"({unreadable} line(s) of the span file could not be read and were skipped)", style="dim"))
    return Group(*parts)


def render_trace(tree: TraceTree, *, rollout_id: str) -> Tree:
    """One trace: a title line, then its roots. Orphans (their parent not in the file) are grouped
    under a line naming the missing parent, so ten thousand installs whose wave span is still open
    collapse like any other siblings."""
    title = Text.assemble(
        ("trace ", "bold"),
        (tree.trace_id, "bold cyan"),
        f"  rollout {rollout_id} · {tree.span_count:,} span{'s' if tree.span_count != 1 else ''} · ",
        format_duration(tree.end_ns - tree.start_ns),
    )
    root = Tree(title)
    orphans: dict[str, list[SpanNode]] = {}
    items: list[SpanNode | str] = []
    for node in tree.roots:
        if node.orphan and node.span.parent_id is not None:
            if node.span.parent_id not in orphans:
                items.append(node.span.parent_id)
            orphans.setdefault(node.span.parent_id, []).append(node)
        else:
            items.append(node)
    for item in items:
        if isinstance(item, str):
            missing = root.add(Text(f"span {item} (not in the span file: still open, or never exported)", style="dim"))
            _add_children(missing, orphans[item])
        else:
            _add(root, item)
    return root


def _add(parent: Tree, node: SpanNode) -> None:
    _add_children(parent.add(span_line(node.span)), node.children)


def _add_children(parent: Tree, nodes: Sequence[SpanNode]) -> None:
    for item in collapse(nodes):
        if isinstance(item, Collapsed):
            parent.add(collapsed_line(item))
        else:
            _add(parent, item)


def span_line(span: SpanRecord) -> Text:
    """`name  service  duration  STATUS  key=value ...`: the status red on ERROR, green on OK."""
    line = Text.assemble(
        (span.name, "bold"), "  ", (span.service or "?", "blue"), "  ", format_duration(span.duration_ns)
    )
    if span.failed:
        line.append("  ERROR", style="bold red")
    elif span.status == "OK":
        line.append("  ok", style="green")
    salient = salient_attributes(span)
    if salient:
        line.append("  " + " ".join(f"{k}={v}" for k, v in salient), style="red" if span.failed else "dim")
    return line


def collapsed_line(summary: Collapsed) -> Text:
    """`… 995 more device.install: 990 ok, 5 error, p50 1.2 s, max 3.4 s`."""
    line = Text(f"… {summary.count:,} more {summary.name}: {summary.ok:,} ok, ", style="italic")
    line.append(f"{summary.failed:,} error", style="bold red italic" if summary.failed else "italic")
    line.append(f", p50 {format_duration(summary.p50_ns)}, max {format_duration(summary.max_ns)}", style="italic")
    if summary.below:
        line.append(f" ({summary.below:,} spans under them)", style="dim italic")
    return line


def salient_attributes(span: SpanRecord) -> list[tuple[str, str]]:
    """The attributes worth a glance (`SALIENT`), as (label, value); a long reason is cut short."""
    out = []
    for key, label in SALIENT:
        value = span.attributes.get(key)
        if value is None:
            continue
        text = str(value)
        if key == "slmops.reason" and len(text) > REASON_CHARS:
            text = text[: REASON_CHARS - 1] + "…"
        out.append((label, text))
    return out


# --- JSON -------------------------------------------------------------------------------------------


def traces_json(traces: Sequence[TraceTree], *, rollout_id: str, path: Path, unreadable: int = 0) -> dict[str, Any]:
    """The traces as nested JSON: every span, nothing collapsed (a program does its own summing)."""
    return {
        "rollout_id": rollout_id,
        "span_file": str(path),
        "unreadable_lines": unreadable,
        "traces": [
            {
                "trace_id": t.trace_id,
                "span_count": t.span_count,
                "start_ns": t.start_ns,
                "end_ns": t.end_ns,
                "complete": t.complete,
                "roots": [node_json(n) for n in t.roots],
            }
            for t in traces
        ],
    }


def node_json(node: SpanNode) -> dict[str, Any]:
    s = node.span
    return {
        "trace_id": s.trace_id,
        "span_id": s.span_id,
        "parent_id": s.parent_id,
        "name": s.name,
        "service": s.service,
        "start_ns": s.start_ns,
        "end_ns": s.end_ns,
        "duration_ms": s.duration_ns / 1e6,
        "status": s.status,
        "attributes": dict(s.attributes),
        "orphan": node.orphan,
        "children": [node_json(c) for c in node.children],
    }


def _jaeger(settings: Settings, rollout_id: str) -> str:
    """Where to look in Jaeger: its UI on the collector's host, searching the rollout's tag."""
    host = urllib.parse.urlsplit(settings.otlp_endpoint).hostname
    ui = JAEGER_UI if host in (None, "127.0.0.1", "localhost", "jaeger") else f"http://{host}:16686"
    tags = urllib.parse.quote(json.dumps({"slmops.rollout_id": rollout_id}, separators=(",", ":")))
    return (
        f"the trace is in Jaeger: open {ui} and search service slmops-rollout, tag slmops.rollout_id={rollout_id} "
        f"({ui}/search?service=slmops-rollout&tags={tags})"
    )
