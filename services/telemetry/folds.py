"""The fold log's records, and the set of stream positions already folded.

Why a log: several instances share one durable consumer, so each folds different windows, and a
window can be delivered twice (a crash between folding it and acking it). Counting each window
exactly once needs one order in which windows entered the aggregates, and one set of the positions
that did. The fold log (stream SLMOPS_TELEMETRY_FOLDS) is that order: an instance appends a record
— the telemetry stream positions it folds and what they add per cohort and bucket — only if the
log still ends where its own view ends (`Nats-Expected-Last-Sequence`); otherwise it reads what the
others appended, drops the windows they already folded, and tries again. Every instance applies
every record in log order, so all of them hold the same aggregates, and a redelivered window is
found in `SequenceSet` and skipped. This is eventsourcing's `Follower.process_event` (state and
tracking position saved together), for a log shared by replicas.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from services.telemetry.aggregates import Aggregate, CohortKey

RECORD_VERSION = 1
# A record stays well under the fold stream's max_msg_size (264 KiB): a batch whose deltas would
# not fit is written as several records.
MAX_RECORD_BYTES = 200 * 1024


@dataclass
class SequenceSet:
    """Stream positions as sorted, disjoint, inclusive ranges, plus a floor: every position at or
    under `floor` counts as contained (the consumer will never deliver it again)."""

    floor: int = 0
    ranges: list[list[int]] = field(default_factory=list)

    def __contains__(self, position: int) -> bool:
        if position <= self.floor:
            return True
        i = bisect.bisect_right(self.ranges, [position, float("inf")]) - 1
        return i >= 0 and self.ranges[i][0] <= position <= self.ranges[i][1]

    def add_range(self, low: int, high: int) -> None:
        """Add `[low, high]`, merging with the ranges it touches."""
        i = bisect.bisect_left(self.ranges, [low, low])
        if i > 0 and self.ranges[i - 1][1] >= low - 1:
            i -= 1
        j = i
        while j < len(self.ranges) and self.ranges[j][0] <= high + 1:
            low, high = min(low, self.ranges[j][0]), max(high, self.ranges[j][1])
            j += 1
        self.ranges[i:j] = [[low, high]]

    def raise_floor(self, floor: int) -> None:
        """Everything at or under `floor` is settled for good: forget the ranges below it."""
        if floor <= self.floor:
            return
        self.floor = floor
        kept = [[max(lo, floor + 1), hi] for lo, hi in self.ranges if hi > floor]
        if kept and kept[0][0] == floor + 1:
            self.floor = kept.pop(0)[1]
        self.ranges = kept

    def to_json(self) -> dict[str, Any]:
        return {"floor": self.floor, "ranges": self.ranges}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SequenceSet:
        return cls(floor=int(doc["floor"]), ranges=[[int(a), int(b)] for a, b in doc["ranges"]])


def ranges_of(positions: Iterable[int]) -> list[list[int]]:
    """Sorted positions as inclusive ranges: [1, 2, 3, 7] -> [[1, 3], [7, 7]]."""
    out: list[list[int]] = []
    for p in sorted(positions):
        if out and p == out[-1][1] + 1:
            out[-1][1] = p
        elif not out or p > out[-1][1]:
            out.append([p, p])
    return out


ReporterKey = tuple[str, int, str]  # (rollout id, wave, digest)


@dataclass(frozen=True, kw_only=True)
class FoldRecord:
    """Windows at `positions` (telemetry stream sequences) added `deltas` to these cohort buckets;
    `late` of them were too old to keep (beyond the retention) and only counted. `reporters` names
    the devices that reported on a rollout wave's digest for the first time (with the latest bucket
    they reported in), so every replica knows the same devices did."""

    positions: list[list[int]]
    deltas: list[tuple[CohortKey, int, Aggregate]]
    late: int = 0
    windows: int = 0
    bucket_seconds: int = 0  # the width of the deltas' buckets: every replica must use the same
    reporters: list[tuple[ReporterKey, list[str], int]] = field(default_factory=list)

    def encode(self) -> bytes:
        return json.dumps(
            {
                "v": RECORD_VERSION,
                "positions": self.positions,
                "late": self.late,
                "bucket_seconds": self.bucket_seconds,
                "windows": self.windows,
                "deltas": [[list(key), bucket, agg.to_json()] for key, bucket, agg in self.deltas],
                "reporters": [[list(key), ids, bucket] for key, ids, bucket in self.reporters],
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> FoldRecord:
        doc = json.loads(raw)
        if doc.get("v") != RECORD_VERSION:
            raise ValueError(f"fold record version {doc.get('v')!r} is not {RECORD_VERSION}")
        return cls(
            positions=[[int(a), int(b)] for a, b in doc["positions"]],
            late=int(doc["late"]),
            bucket_seconds=int(doc["bucket_seconds"]),
            windows=int(doc["windows"]),
            deltas=[(_key(k), int(bucket), Aggregate.from_json(agg)) for k, bucket, agg in doc["deltas"]],
            reporters=[
                ((str(r), int(w), str(d)), [str(i) for i in ids], int(bucket))
                for (r, w, d), ids, bucket in doc.get("reporters", [])  # records from before reporters
            ],
        )


def _key(raw: list[Any]) -> CohortKey:
    digest, device_class, rollout_id, wave = raw
    return (str(digest), str(device_class), rollout_id, wave)
