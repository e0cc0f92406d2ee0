"""A rollout's traces as trees, on synthetic spans: which traces, the shape, the order, orphans,
collapsing a wave of many devices, and reading the span file."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from shared.trace_tree import (
    Collapsed,
    SpanNode,
    SpanRecord,
    build_tree,
    collapse,
    format_duration,
    read_rollout_spans,
    rollout_traces,
)

T1, T2, T3 = "a" * 32, "b" * 32, "c" * 32
MS = 1_000_000


def span(
    name: str,
    sid: str,
    *,
    parent: str | None = None,
    start: int = 0,
    ms: int = 1,
    status: str = "OK",
    trace: str = T1,
    service: str = "slmops-rollout",
    **attributes: Any,
) -> SpanRecord:
    """A span as the exporter writes it; `attributes` with `slmops.` left off (`rollout_id="r1"`)."""
    return SpanRecord(
        trace_id=trace,
        span_id=sid,
        parent_id=parent,
        name=name,
        service=service,
        start_ns=start * MS,
        end_ns=(start + ms) * MS,
        status=status,
        attributes={f"slmops.{k}": v for k, v in attributes.items()},
    )


def line(s: SpanRecord) -> str:
    """`s` as one line of the span file (the exporter's key order)."""
    return json.dumps(
        {
            "trace_id": s.trace_id,
            "span_id": s.span_id,
            "parent_id": s.parent_id,
            "name": s.name,
            "service": s.service,
            "start_ns": s.start_ns,
            "end_ns": s.end_ns,
            "status": s.status,
            "attributes": dict(s.attributes),
        }
    )


def shape(nodes: tuple[SpanNode, ...] | list[SpanNode]) -> list[Any]:
    """The tree as nested (span id, children) pairs; a leaf is its span id."""
    return [(n.span.span_id, shape(n.children)) if n.children else n.span.span_id for n in nodes]


ROLLOUT = [
    span("rollout", "root", start=0, ms=100, rollout_id="r1"),
    span("wave", "w1", parent="root", start=50, ms=40, rollout_id="r1", wave=1),
    span("wave", "w0", parent="root", start=10, ms=30, rollout_id="r1", wave=0),
    span("gate", "g0", parent="w0", start=35, rollout_id="r1", wave=0, verdict="pass"),
    span("write_desired", "d0", parent="w0", start=11, rollout_id="r1"),
    span("device.install", "i0", parent="d0", start=12, ms=5, service="slmops-agent", device_id="dev-1"),
    span("device.download", "s0", parent="i0", start=12, service="slmops-agent"),
]


# --- which traces, and their shape ------------------------------------------------------------------


def test_the_tree_follows_parents_and_orders_children_by_start() -> None:
    spans = ROLLOUT.copy()
    random.Random(1).shuffle(spans)
    (tree,) = rollout_traces(spans, "r1")
    assert shape(tree.roots) == [("root", [("w0", [("d0", [("i0", ["s0"])]), "g0"]), "w1"])]
    assert tree.complete and tree.span_count == 7 and (tree.start_ns, tree.end_ns) == (0, 100 * MS)


def test_only_the_traces_with_a_span_of_the_rollout_and_all_their_spans() -> None:
    other = [span("rollout", "x", trace=T2, rollout_id="r2"), span("child", "y", parent="x", trace=T2)]
    # A trace only a device's span names the rollout in (its install continued the trace) is found too.
    devices = [
        span("device.install", "i9", parent="w9", trace=T3, start=-5, rollout_id="r1"),
        span("device.verify", "v9", parent="i9", trace=T3, start=-4),
    ]
    traces = rollout_traces([*other, *ROLLOUT, *devices], "r1")
    assert [t.trace_id for t in traces] == [T3, T1], "earliest first"
    assert traces[0].span_count == 2 and traces[1].span_count == 7


def test_an_unknown_rollout_has_no_trace() -> None:
    assert rollout_traces(ROLLOUT, "r404") == []


def test_spans_whose_parent_is_not_in_the_file_are_orphan_roots() -> None:
    """While a wave runs its span is not written yet: its installs still show, as roots."""
    spans = [
        span("device.install", "i2", parent="open-wave", start=2, rollout_id="r1"),
        span("device.install", "i1", parent="open-wave", start=1, rollout_id="r1"),
        span("device.download", "s1", parent="i1", start=1),
    ]
    (tree,) = rollout_traces(spans, "r1")
    assert shape(tree.roots) == [("i1", ["s1"]), "i2"]
    assert all(r.orphan for r in tree.roots) and not tree.complete
    (with_root,) = rollout_traces([*spans, span("cli", "c", start=0, rollout_id="r1")], "r1")
    assert not with_root.complete, "a real root elsewhere does not make the orphans' parents known"


def test_a_span_recorded_twice_counts_once_as_its_last_record() -> None:
    """A wave paused then resumed is recorded at each verdict, under one span id."""
    again = span("wave", "w0", parent="root", start=10, ms=80, rollout_id="r1", wave=0, verdict="Successful")
    (tree,) = rollout_traces([*ROLLOUT, again, ROLLOUT[2]], "r1")
    assert tree.span_count == 7 and sum(r.size for r in tree.roots) == 7
    (wave0,) = [n for n in tree.roots[0].children if n.span.span_id == "w0"]
    assert wave0.span.attributes["slmops.verdict"] == "Successful" and len(wave0.children) == 2


def test_a_cycle_of_parent_ids_still_shows_every_span_once() -> None:
    tree = build_tree(T1, [span("a", "a", parent="b", start=1), span("b", "b", parent="a", start=2)])
    assert shape(tree.roots) == [("a", ["b"])] and tree.roots[0].orphan


# --- collapsing --------------------------------------------------------------------------------------


def installs(count: int, *, failed: frozenset[int] = frozenset(), steps: int = 0) -> list[SpanNode]:
    """`count` device.install siblings in start order, install i lasting i+1 ms, with `steps` children each."""
    nodes = []
    for i in range(count):
        s = span("device.install", f"i{i}", parent="w", start=i, ms=i + 1, status="ERROR" if i in failed else "OK")
        kids = tuple(
            SpanNode(span=span("device.download", f"s{i}.{k}", parent=s.span_id), children=()) for k in range(steps)
        )
        nodes.append(SpanNode(span=s, children=kids))
    return nodes


def test_a_large_fan_out_keeps_five_failed_first_and_summarises_the_rest() -> None:
    nodes = installs(1000, failed=frozenset({3, 500, 600, 700, 800, 900, 901, 902, 903, 904}), steps=2)
    out = collapse(nodes)
    shown = [n.span.span_id for n in out if isinstance(n, SpanNode)]
    assert shown == ["i3", "i500", "i600", "i700", "i800"], "failed ones first, then in start order"
    assert isinstance(out[-1], Collapsed) and len(out) == 6, "the summary follows the last one shown"
    summary = out[-1]
    assert (summary.name, summary.count, summary.failed, summary.ok) == ("device.install", 995, 5, 990)
    hidden = sorted(i + 1 for i in range(1000) if f"i{i}" not in shown)
    assert summary.p50_ns == hidden[(len(hidden) - 1) // 2] * MS and summary.max_ns == 1000 * MS
    assert summary.below == 995 * 2


def test_without_failures_the_earliest_stay() -> None:
    out = collapse(installs(20))
    assert [n.span.span_id for n in out if isinstance(n, SpanNode)] == ["i0", "i1", "i2", "i3", "i4"]
    assert isinstance(out[5], Collapsed) and out[5].count == 15 and out[5].failed == 0


def test_one_more_than_kept_is_shown_whole_and_other_names_are_untouched() -> None:
    gate = SpanNode(span=span("gate", "g", start=3), children=())
    nodes = sorted([*installs(6), gate], key=lambda n: n.span.start_ns)
    assert collapse(nodes) == nodes


def test_each_name_is_collapsed_on_its_own() -> None:
    writes = [SpanNode(span=span("write_desired", f"d{i}", start=i), children=()) for i in range(10)]
    nodes = sorted([*installs(10), *writes], key=lambda n: (n.span.start_ns, n.span.name))
    out = collapse(nodes, keep=2)
    summaries = [(c.name, c.count) for c in out if isinstance(c, Collapsed)]
    assert summaries == [("device.install", 8), ("write_desired", 8)]
    assert len(out) == 2 * 2 + 2


# --- the span file ----------------------------------------------------------------------------------


def test_reading_the_file_keeps_the_rollouts_traces_and_counts_broken_lines(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    other = span("rollout", "x", trace=T2, rollout_id="r2")
    lines = [line(s) for s in ROLLOUT[:3]] + [line(other), "not json", "", '{"trace_id": "' + T1 + '", "span_i']
    lines += [line(s) for s in ROLLOUT[3:]] + [json.dumps({"trace_id": T1, "name": "no ids"})]
    path.write_text("\n".join(lines) + "\n")
    read = read_rollout_spans(path, "r1")
    assert sorted(s.span_id for s in read.spans) == sorted(s.span_id for s in ROLLOUT)
    assert read.unreadable == 3
    assert read_rollout_spans(path, "r404").spans == ()


def test_no_span_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_rollout_spans(tmp_path / "traces.jsonl", "r1")


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"trace_id": T1},
        {"trace_id": 1, "span_id": "s", "name": "n", "start_ns": 0},
        {**json.loads(line(ROLLOUT[0])), "attributes": []},
    ],
    ids=["not-an-object", "no-span-id", "number-id", "attributes-not-an-object"],
)
def test_what_is_not_a_span_is_refused(data: object) -> None:
    with pytest.raises(ValueError, match="not"):
        SpanRecord.from_json(data)


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (420_000, "0.42 ms"),
        (8_500_000, "8.5 ms"),
        (120 * MS, "120 ms"),
        (1_200 * MS, "1.2 s"),
        (185_000 * MS, "3 min 05 s"),
        (7_380_000 * MS, "2 h 03 min"),
    ],
)
def test_durations_read_as_people_say_them(ns: int, text: str) -> None:
    assert format_duration(ns) == text
