"""A rollout's traces as trees, from the span file `shared.tracing.JsonLinesSpanExporter` appends to.

`slmops trace ROLLOUT_ID` reads `<home>/traces.jsonl` (one JSON object a line: `trace_id`,
`span_id`, `parent_id`, `name`, `service`, `start_ns`, `end_ns`, `status`, `attributes`), finds
every trace that holds a span whose `slmops.rollout_id` attribute names the rollout, and prints
each as a tree. This module is the part with no terminal in it, so it is tested on synthetic spans:

* `read_rollout_spans` reads the file in two cheap passes (the lines that mention the rollout,
  then the lines of the traces found), so a span file months long is not parsed whole;
* `rollout_traces` builds the trees: roots are the spans whose parent is not in the file,
  children are ordered by start time. A span is written when it *ends*, so while a rollout runs
  its root and the current wave's span are not in the file yet, but the installs under them are:
  those are roots too (`orphan`), rather than lost;
* `collapse` is what keeps a wave of ten thousand devices readable: beyond a few siblings of one
  name, the rest become one summary (how many, how many failed, p50 and max duration).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

ROLLOUT_ATTRIBUTE: Final = "slmops.rollout_id"
KEEP: Final = 5  # siblings of one name shown before the rest are summarised
_TRACE_ID_PREFIX: Final = '{"trace_id": "'  # how the exporter starts every line (a fast path, not a rule)


@dataclass(frozen=True, kw_only=True, slots=True)
class SpanRecord:
    """One line of the span file."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    service: str | None
    start_ns: int
    end_ns: int
    status: str  # OK, ERROR or UNSET (OpenTelemetry's status codes)
    attributes: Mapping[str, Any]

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @property
    def failed(self) -> bool:
        return self.status == "ERROR"

    @classmethod
    def from_json(cls, data: Any) -> SpanRecord:
        """The span a decoded line describes.

        Raises:
            ValueError: the line is not a span as the exporter writes them.
        """
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        try:
            trace_id, span_id, name = data["trace_id"], data["span_id"], data["name"]
            parent_id, service, status = data.get("parent_id"), data.get("service"), data.get("status") or "UNSET"
            start, end = int(data["start_ns"]), int(data.get("end_ns") or data["start_ns"])
            attributes = data.get("attributes")
            attributes = {} if attributes is None else attributes
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a span: {exc}") from None
        strings = (trace_id, span_id, name, status)
        if not all(isinstance(s, str) for s in strings) or not isinstance(attributes, dict):
            raise ValueError("not a span: ids, name and status must be strings, attributes an object")
        return cls(
            trace_id=trace_id,
            span_id=span_id,
            parent_id=parent_id if isinstance(parent_id, str) else None,
            name=name,
            service=service if isinstance(service, str) else None,
            start_ns=start,
            end_ns=end,
            status=status,
            attributes=attributes,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class SpanNode:
    """A span and its children, ordered by start time.

    Attributes:
        orphan: its parent is named but not in the file (still open, or never exported).
    """

    span: SpanRecord
    children: tuple[SpanNode, ...]
    orphan: bool = False

    @property
    def size(self) -> int:
        """This span and every span under it."""
        return 1 + sum(child.size for child in self.children)


@dataclass(frozen=True, kw_only=True, slots=True)
class TraceTree:
    """One trace of the rollout: its roots (real ones and orphans), ordered by start time."""

    trace_id: str
    roots: tuple[SpanNode, ...]
    span_count: int
    start_ns: int
    end_ns: int

    @property
    def complete(self) -> bool:
        """Whether every span's parent is in the file (no orphans: nothing still open or lost)."""
        return not any(root.orphan for root in self.roots)


@dataclass(frozen=True, kw_only=True, slots=True)
class Collapsed:
    """Siblings of one name not shown one by one.

    Attributes:
        name: their span name.
        count: how many.
        failed: how many of them have an ERROR status.
        p50_ns: their median duration (the lower middle one of an even count).
        max_ns: their longest.
        below: spans under them, hidden with them.
    """

    name: str
    count: int
    failed: int
    p50_ns: int
    max_ns: int
    below: int

    @property
    def ok(self) -> int:
        return self.count - self.failed


@dataclass(frozen=True, kw_only=True, slots=True)
class SpanRead:
    """What `read_rollout_spans` found: the spans of the rollout's traces, and lines it could not read."""

    spans: tuple[SpanRecord, ...]
    unreadable: int


def read_rollout_spans(path: Path, rollout_id: str) -> SpanRead:
    """Every span of every trace that has a span of `rollout_id`, from the span file at `path`.

    Two passes: the lines that contain the rollout id (a substring test before any parsing) give
    the trace ids; then the lines of those traces. A line that is not a span (a line cut short by
    a writer that died, say) is counted and skipped.

    Args:
        path: the span file.
        rollout_id: a rollout id (`[A-Za-z0-9_-]`, so it appears in a line exactly as written).

    Raises:
        FileNotFoundError: there is no span file at `path`.
    """
    unreadable = 0
    traces: set[str] = set()
    for line in _lines(path):
        if rollout_id not in line:
            continue
        span = _parse(line)
        if span is None:
            unreadable += 1
        elif span.attributes.get(ROLLOUT_ATTRIBUTE) == rollout_id:
            traces.add(span.trace_id)
    if not traces:
        return SpanRead(spans=(), unreadable=unreadable)
    spans: list[SpanRecord] = []
    for line in _lines(path):
        if line.startswith(_TRACE_ID_PREFIX) and line[14:46] not in traces:
            continue
        span = _parse(line)
        if span is None:
            if rollout_id not in line:  # counted in the first pass otherwise
                unreadable += 1
        elif span.trace_id in traces:
            spans.append(span)
    return SpanRead(spans=tuple(spans), unreadable=unreadable)


def rollout_traces(spans: Iterable[SpanRecord], rollout_id: str) -> list[TraceTree]:
    """The trees of the traces that hold a span of `rollout_id`, earliest first.

    Args:
        spans: spans of any traces (the others are ignored); a span recorded twice in one trace
            (a wave paused and resumed is recorded at each verdict) counts once: the record that
            ends last.
        rollout_id: what `slmops.rollout_id` must equal on at least one span of a trace.
    """
    by_trace: dict[str, dict[str, SpanRecord]] = defaultdict(dict)
    wanted: set[str] = set()
    for span in spans:
        known = by_trace[span.trace_id]
        earlier = known.get(span.span_id)
        if earlier is None or span.end_ns > earlier.end_ns:
            known[span.span_id] = span
        if span.attributes.get(ROLLOUT_ATTRIBUTE) == rollout_id:
            wanted.add(span.trace_id)
    trees = [build_tree(trace_id, list(by_trace[trace_id].values())) for trace_id in wanted]
    return sorted(trees, key=lambda t: (t.start_ns, t.trace_id))


def build_tree(trace_id: str, spans: Sequence[SpanRecord]) -> TraceTree:
    """One trace's spans as a tree (span ids assumed unique, as `rollout_traces` makes them).

    Roots are the spans with no parent and the orphans (a parent not among `spans`). A span no
    root reaches (only a cycle of parent ids does that, never a real trace) is an orphan root too,
    so every span is shown exactly once.
    """
    ids = {s.span_id for s in spans}
    children: dict[str, list[SpanRecord]] = defaultdict(list)
    tops: list[SpanRecord] = []
    for span in spans:
        if span.parent_id is not None and span.parent_id in ids and span.parent_id != span.span_id:
            children[span.parent_id].append(span)
        else:
            tops.append(span)
    seen: set[str] = set()

    def node(span: SpanRecord, *, orphan: bool) -> SpanNode:
        seen.add(span.span_id)
        kids = sorted((c for c in children[span.span_id] if c.span_id not in seen), key=_start_order)
        return SpanNode(span=span, children=tuple(node(c, orphan=False) for c in kids), orphan=orphan)

    roots = [node(s, orphan=s.parent_id is not None) for s in sorted(tops, key=_start_order)]
    for span in sorted(spans, key=_start_order):  # a cycle: no root reached it
        if span.span_id not in seen:
            roots.append(node(span, orphan=True))
    return TraceTree(
        trace_id=trace_id,
        roots=tuple(sorted(roots, key=lambda n: _start_order(n.span))),
        span_count=len(spans),
        start_ns=min((s.start_ns for s in spans), default=0),
        end_ns=max((s.end_ns for s in spans), default=0),
    )


def collapse(nodes: Sequence[SpanNode], *, keep: int = KEEP) -> list[SpanNode | Collapsed]:
    """`nodes` (siblings, in start order) with every name beyond `keep` of it summarised.

    Of a name with more than `keep + 1` spans, `keep` stay, failed ones first (the ones worth
    reading), the earliest otherwise; the rest become one `Collapsed`, placed after the last one
    shown. Its counts and durations are of the hidden spans only. A name with `keep + 1` spans is
    shown whole: "1 more" says less than the span would.
    """
    groups: dict[str, list[SpanNode]] = defaultdict(list)
    for n in nodes:
        groups[n.span.name].append(n)
    shown: set[int] = set()
    summaries: dict[int, Collapsed] = {}  # by id() of the last node shown of the name
    for name, group in groups.items():
        if len(group) <= keep + 1:
            shown.update(id(n) for n in group)
            continue
        failed_first = sorted(group, key=lambda n: (not n.span.failed, _start_order(n.span)))
        kept, hidden = failed_first[:keep], failed_first[keep:]
        shown.update(id(n) for n in kept)
        last = max(kept, key=lambda n: _start_order(n.span))
        durations = sorted(n.span.duration_ns for n in hidden)
        summaries[id(last)] = Collapsed(
            name=name,
            count=len(hidden),
            failed=sum(1 for n in hidden if n.span.failed),
            p50_ns=int(statistics.median_low(durations)),
            max_ns=durations[-1],
            below=sum(n.size - 1 for n in hidden),
        )
    out: list[SpanNode | Collapsed] = []
    for n in nodes:
        if id(n) in shown:
            out.append(n)
            if id(n) in summaries:
                out.append(summaries[id(n)])
    return out


def format_duration(ns: int) -> str:
    """A duration as people read it: 0.42 ms, 8.5 ms, 120 ms, 1.2 s, 3 min 05 s, 2 h 03 min."""
    ms = ns / 1e6
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _start_order(span: SpanRecord) -> tuple[int, str]:
    return (span.start_ns, span.span_id)


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                yield line


def _parse(line: str) -> SpanRecord | None:
    try:
        return SpanRecord.from_json(json.loads(line))
    except ValueError:  # json.JSONDecodeError is one
        return None
