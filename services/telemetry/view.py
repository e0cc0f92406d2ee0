"""The aggregates one instance holds: every cohort bucket, as of a position in the fold log.

Pure state and pure functions of it; the service moves it forward (`fold` builds the records a batch
implies, `apply` applies a record the log accepted) and reads it (`select`). Restoring from a
snapshot (`restore`) sets each stored bucket at the position it was saved at, so replaying the log
from the snapshot's position applies to each bucket only what it does not already hold.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from services.telemetry.aggregates import Aggregate, CohortKey, bucket_of
from services.telemetry.folds import MAX_RECORD_BYTES, FoldRecord, ReporterKey, SequenceSet, ranges_of
from services.telemetry.observations import Observation
from shared.errors import SlmopsError

BucketKey = tuple[CohortKey, int]


class BucketMismatch(SlmopsError):
    """Replicas on one fold log disagree on the bucket width (a deployment error)."""


@dataclass
class TelemetryView:
    """Aggregates by cohort and bucket start, the positions folded, and the log position reflected.

    Attributes:
        bucket_seconds: the width of a time bucket (the resolution of every time range).
        retention_seconds: buckets older than this are dropped (`prune`) and windows for them
            only counted as late.
    """

    bucket_seconds: int
    retention_seconds: int
    position: int = 0
    folded: SequenceSet = field(default_factory=SequenceSet)
    buckets: dict[BucketKey, Aggregate] = field(default_factory=dict)
    changed_at: dict[BucketKey, int] = field(default_factory=dict)
    windows: int = 0
    late: int = 0
    # Devices that reported on a rollout wave's digest, and the latest bucket any did (for pruning).
    # A set, so applying a record twice (a replay after a snapshot) changes nothing.
    reporters: dict[ReporterKey, set[str]] = field(default_factory=dict)
    reporters_last: dict[ReporterKey, int] = field(default_factory=dict)
    reporters_changed: set[ReporterKey] = field(default_factory=set)
    # Restored from a snapshot: the position each bucket (and the folded set) was saved at.
    _saved_at: dict[BucketKey, int] = field(default_factory=dict)
    _folded_saved_at: int = 0

    # --- moving forward ------------------------------------------------------------------------

    def fold(self, batch: Sequence[tuple[int, Observation]], *, now: datetime) -> list[FoldRecord]:
        """The records that fold `batch` ((stream position, window) pairs) into the aggregates:
        windows already folded are left out; none at all if every one was. Usually one record; a
        batch whose deltas would not fit one is split by cohort bucket, each record carrying the
        positions of the windows whose deltas it holds."""
        fresh: dict[int, Observation] = {}
        for position, obs in batch:
            if position not in self.folded and position not in fresh:
                fresh[position] = obs
        if not fresh:
            return []
        oldest = bucket_of(now, self.bucket_seconds) - self.retention_seconds
        deltas: dict[BucketKey, Aggregate] = {}
        members: dict[BucketKey, list[int]] = defaultdict(list)
        late: list[int] = []
        reporters: dict[ReporterKey, tuple[set[str], int]] = {}
        for position, obs in fresh.items():
            bucket = bucket_of(obs.start, self.bucket_seconds)
            digest, _, rollout_id, wave = obs.cohort
            if rollout_id is not None and wave is not None:
                rkey = (rollout_id, wave, digest)
                ids, latest = reporters.get(rkey, (set(), 0))
                if obs.device_id not in self.reporters.get(rkey, ()):
                    ids.add(obs.device_id)
                reporters[rkey] = (ids, max(latest, bucket))
            if bucket < oldest:
                late.append(position)
                continue
            key = (obs.cohort, bucket)
            delta = deltas.get(key)
            if delta is None:
                delta = deltas[key] = Aggregate()
            delta.add(obs)
            members[key].append(position)
        records: list[FoldRecord] = []
        chunk: list[BucketKey] = []
        size = 0
        for key, delta in deltas.items():
            cost = _delta_bytes(delta)
            if chunk and size + cost > MAX_RECORD_BYTES:
                records.append(_record(chunk, deltas, members, [], self.bucket_seconds))
                chunk, size = [], 0
            chunk.append(key)
            size += cost
        last = _record(chunk, deltas, members, late, self.bucket_seconds)
        news = [(key, sorted(ids), latest) for key, (ids, latest) in sorted(reporters.items())]
        records.append(replace(last, reporters=news))
        return records

    def apply(self, record: FoldRecord, position: int) -> None:
        """Apply the record the log holds at `position` (each bucket only once: see `restore`).

        Raises:
            BucketMismatch: the record's buckets are of another width (a replica configured
                differently): applying it would put its windows in the wrong time ranges.
        """
        if position <= self.position:
            return
        if record.bucket_seconds != self.bucket_seconds:
            raise BucketMismatch(
                f"fold record {position} has {record.bucket_seconds} s buckets, this instance "
                f"{self.bucket_seconds} s: every replica must run with the same SLMOPS_TELEMETRY_BUCKET_SECONDS"
            )
        for cohort, bucket, delta in record.deltas:
            key = (cohort, bucket)
            if position <= self._saved_at.get(key, 0):
                continue
            mine = self.buckets.get(key)
            if mine is None:
                self.buckets[key] = delta  # the record is applied once, then dropped: no copy needed
            else:
                mine.merge(delta)
            self.changed_at[key] = position
        for rkey, ids, latest in record.reporters:
            self.reporters.setdefault(rkey, set()).update(ids)
            self.reporters_last[rkey] = max(self.reporters_last.get(rkey, 0), latest)
            self.reporters_changed.add(rkey)
        if position > self._folded_saved_at:
            for low, high in record.positions:
                self.folded.add_range(low, high)
            self.windows += record.windows
            self.late += record.late
        self.position = position

    def restore(
        self,
        *,
        position: int,
        folded: SequenceSet,
        folded_at: int,
        windows: int,
        late: int,
        buckets: Sequence[tuple[BucketKey, Aggregate, int]],
    ) -> None:
        """Start from a snapshot at `position` (where replaying the log begins): the folded set as
        of `folded_at`, each bucket as of its own position."""
        self.position = position
        self.folded = folded
        self._folded_saved_at = folded_at
        self.windows, self.late = windows, late
        for key, aggregate, saved_at in buckets:
            self.buckets[key] = aggregate
            self._saved_at[key] = saved_at
            self.changed_at[key] = saved_at

    def prune(self, now: datetime) -> list[BucketKey]:
        """Drop the buckets beyond the retention (and the reporters of a wave none reported on since);
        returns the buckets' keys."""
        oldest = bucket_of(now, self.bucket_seconds) - self.retention_seconds
        for rkey in [k for k, latest in self.reporters_last.items() if latest < oldest]:
            del self.reporters[rkey], self.reporters_last[rkey]
            self.reporters_changed.add(rkey)  # the next save deletes its entry
        gone = [key for key in self.buckets if key[1] < oldest]
        for key in gone:
            del self.buckets[key]
            self.changed_at.pop(key, None)
            self._saved_at.pop(key, None)
        return gone

    # --- reading -------------------------------------------------------------------------------

    def select(
        self, wanted: Callable[[CohortKey], bool], *, since: datetime, until: datetime
    ) -> dict[CohortKey, Aggregate]:
        """Per cohort, the merge of its buckets that start in `[bucket_of(since), until)`."""
        first = bucket_of(since, self.bucket_seconds)
        end = until.timestamp()
        merged: dict[CohortKey, Aggregate] = defaultdict(Aggregate)
        for (cohort, bucket), aggregate in self.buckets.items():
            if first <= bucket < end and wanted(cohort):
                merged[cohort].merge(aggregate)
        return dict(merged)


def _delta_bytes(delta: Aggregate) -> int:
    """About what a delta takes in a record's JSON (its histogram, moments and distinct devices)."""
    return 400 + 8 * len(delta.latency.counts) + 48 * len(delta.outputs) + 12 * min(delta.windows, 1024)


def _record(
    keys: list[BucketKey],
    deltas: dict[BucketKey, Aggregate],
    members: dict[BucketKey, list[int]],
    late: list[int],
    bucket_seconds: int,
) -> FoldRecord:
    positions = [p for key in keys for p in members[key]] + late
    return FoldRecord(
        positions=ranges_of(positions),
        deltas=[(cohort, bucket, deltas[(cohort, bucket)]) for cohort, bucket in keys],
        late=len(late),
        windows=len(positions),
        bucket_seconds=bucket_seconds,
    )


def merged(aggregates: dict[CohortKey, Aggregate]) -> Aggregate:
    """One aggregate of several cohorts."""
    total = Aggregate()
    for aggregate in aggregates.values():
        total.merge(aggregate)
    return total
