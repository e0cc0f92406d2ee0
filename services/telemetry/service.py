"""The telemetry service's use cases: fold windows exactly once, judge gates, summarise, publish rollups.

Ingest (`ingest`): windows become `Observation`s, the view says which records fold the ones not yet
folded, each record is appended to the fold log at the position the view ends at, and applied. If
another instance appended first (`FoldConflict`), the view catches up with the log and the batch is
folded again, minus what is now known to be folded (see `folds`). The kit acks the batch only after
this returns, so a crash in between redelivers windows the log already holds, which are skipped.

In the background (`tick`): follow the log (what other instances folded), save changed buckets with
the position they reflect (`Snapshots`), drop buckets beyond the retention, publish the rollups of
minutes that have closed, and refresh the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.telemetry import drift
from services.telemetry.aggregates import Aggregate, CohortKey, at, bucket_of, cohort_of
from services.telemetry.folds import FoldRecord, ReporterKey, SequenceSet
from services.telemetry.gates import judge
from services.telemetry.metrics import TelemetryMetrics, cohort_labels
from services.telemetry.observations import observe
from services.telemetry.ports import Announcer, FoldConflict, FoldLog, ModelCatalog, Snapshots
from services.telemetry.statistics import Moments
from services.telemetry.view import BucketKey, TelemetryView, merged
from shared import subjects
from shared.errors import TransientError
from shared.messages.device import TelemetryWindow, TelemetryWindowV1
from shared.messages.envelope import deterministic_id
from shared.messages.rollout import GateVerdict
from shared.messages.telemetry import (
    MAX_SUMMARY_COHORTS,
    DriftDetected,
    EvaluateGate,
    GateEvaluation,
    ListReporters,
    Reporters,
    Summarize,
    TelemetryRollup,
    TelemetrySummary,
)

log = logging.getLogger("slmops.telemetry")


@dataclass(frozen=True, kw_only=True)
class DriftPolicy:
    """How drift is judged (see `drift`): periods of `period_seconds`, the reference from the first
    `reference_periods`, events after `debounce` breaching periods, none under `min_requests`."""

    period_seconds: int = 60
    reference_periods: int = 5
    debounce: int = drift.DEBOUNCE_PERIODS
    min_requests: int = drift.MIN_REQUESTS


MAX_FOLD_ATTEMPTS = 50
STATE_KEY = "state"
REFERENCE_PREFIX = "reference."
REPORTERS_PREFIX = "reporters."
MINUTE = 60

Window = TelemetryWindow | TelemetryWindowV1


class TelemetryService:
    """Args:
    view: the aggregates (empty until `start` restores and catches up).
    log, snapshots, announcer: the ports (`ports.py`).
    catalog: the registry's records, for drift references from evaluation sets (None: none).
    backlog: how many windows wait in the stream, undelivered (for the lag metric).
    clock: now, as an aware datetime (a test's own clock).
    rollup_seconds: what one rollup covers (a minute; a multiple of the view's buckets).
    rollup_grace_seconds: how long after its period ends a rollup waits.
    """

    def __init__(
        self,
        *,
        view: TelemetryView,
        log: FoldLog,
        snapshots: Snapshots,
        announcer: Announcer,
        metrics: TelemetryMetrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rollup_seconds: int = MINUTE,
        rollup_grace_seconds: float = 30.0,
        source: str = "telemetry",
        backlog: Callable[[], Awaitable[int]] | None = None,
        drift_policy: DriftPolicy | None = None,
        catalog: ModelCatalog | None = None,
    ) -> None:
        self.view = view
        self._log = log
        self._snapshots = snapshots
        self._announcer = announcer
        self.metrics = metrics or TelemetryMetrics()
        self._clock = clock
        self._rollup_seconds = rollup_seconds
        self._grace = rollup_grace_seconds
        self._source = source
        self._backlog = backlog
        self._lock = asyncio.Lock()
        self._saved: dict[BucketKey, int] = {}
        self.rollups_through: int | None = None
        self.drift = drift_policy or DriftPolicy()
        self.drift_through: int | None = None
        self.references: dict[str, tuple[int, Aggregate]] = {}  # digest -> (scored from, reference)
        self._catalog = catalog
        self.eval_outputs: dict[str, dict[str, Moments]] = {}  # digest -> the registry's, once found
        self.missing_records = 0
        self._task: asyncio.Task[None] | None = None

    # --- start-up ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore the last snapshot, then apply what the fold log holds after it."""
        async with self._lock:
            await self._restore()
            await self._catch_up()
        if self.rollups_through is None:
            self.rollups_through = bucket_of(self._clock(), self._rollup_seconds) - self._rollup_seconds
        if self.drift_through is None:
            period = self.drift.period_seconds
            self.drift_through = bucket_of(self._clock(), period) - period
        log.info("telemetry view ready", extra={"position": self.view.position, "buckets": len(self.view.buckets)})

    def run_in_background(self, every: float, *, snapshot_every: float) -> None:
        """Tick every `every` seconds (snapshots every `snapshot_every`) until `stop`."""

        async def loop() -> None:
            last_snapshot = 0.0
            while True:
                await asyncio.sleep(every)
                clock = asyncio.get_running_loop().time()
                try:
                    await self.tick(snapshot=clock - last_snapshot >= snapshot_every)
                except Exception:  # a failed tick is retried by the next one
                    log.warning("telemetry tick failed", exc_info=True)
                    continue
                if clock - last_snapshot >= snapshot_every:
                    last_snapshot = clock

        self._task = asyncio.create_task(loop(), name="telemetry tick")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # --- ingest --------------------------------------------------------------------------------

    async def ingest(self, windows: Sequence[tuple[int, Window]], *, rejected: int = 0) -> int:
        """Fold windows ((telemetry stream position, window) pairs) in exactly once; returns how
        many were new (the rest had been folded already)."""
        self.metrics.rejected.inc(rejected)
        observed = [(position, observe(window)) for position, window in windows]
        async with self._lock:
            for _ in range(MAX_FOLD_ATTEMPTS):
                records = self.view.fold(observed, now=self._clock())
                try:
                    for record in records:
                        position = await self._log.append(record.encode(), expected_last=self.view.position)
                        self.view.apply(record, position)
                except FoldConflict:
                    self.metrics.conflicts.inc()
                    await self._catch_up()
                    continue
                new = sum(r.windows for r in records)
                self.metrics.windows.inc(new)
                self.metrics.late.inc(sum(r.late for r in records))
                self.metrics.duplicates.inc(len(observed) - new)
                self.metrics.fold_position.set(self.view.position)
                return new
        raise TransientError(f"the fold log kept moving: {MAX_FOLD_ATTEMPTS} appends lost to other instances")

    async def _catch_up(self) -> None:
        """Apply every record the log holds after the view's position (the caller holds the lock)."""
        last = await self._log.last()
        for position in range(self.view.position + 1, last + 1):
            raw = await self._log.read(position)
            if raw is None:  # aged out of the log before it was snapshotted: said, and skipped
                self.missing_records += 1
                log.error("fold record missing: its windows are not in the aggregates", extra={"position": position})
                self.view.position = position
                continue
            self.view.apply(FoldRecord.decode(raw), position)

    # --- background ----------------------------------------------------------------------------

    async def tick(self, *, snapshot: bool = True) -> None:
        """Follow the log, save, prune, publish due rollups, refresh the metrics."""
        async with self._lock:
            await self._catch_up()
        now = self._clock()
        if snapshot:
            await self.save_snapshot(now)
        await self.publish_rollups(now)
        await self.detect_drift(now)
        self._refresh_metrics(now)
        if self._backlog is not None:
            self.metrics.lag.set(await self._backlog())

    async def save_snapshot(self, now: datetime) -> None:
        """Save the buckets changed since the last save, and the folded set, at the view's position."""
        view = self.view
        position = view.position
        for key in view.prune(now):
            self._saved.pop(key, None)
            await self._snapshots.delete(_bucket_key(key))
        for rkey in sorted(view.reporters_changed):
            name = _reporters_key(rkey)
            if rkey in view.reporters:
                doc = {"key": list(rkey), "ids": sorted(view.reporters[rkey]), "last": view.reporters_last[rkey]}
                await self._snapshots.save(name, _dumps(doc))
            else:
                await self._snapshots.delete(name)
        view.reporters_changed.clear()
        for key, changed in list(view.changed_at.items()):
            if changed > self._saved.get(key, 0) and key in view.buckets:
                doc = {
                    "cohort": list(key[0]),
                    "bucket": key[1],
                    "position": position,
                    "agg": view.buckets[key].to_json(),
                }
                await self._snapshots.save(_bucket_key(key), _dumps(doc))
                self._saved[key] = position
        state = {
            "position": position,
            "folded": view.folded.to_json(),
            "windows": view.windows,
            "late": view.late,
            "rollups_through": self.rollups_through,
            "drift_through": self.drift_through,
        }
        await self._snapshots.save(STATE_KEY, _dumps(state))

    async def _restore(self) -> None:
        entries = dict(await self._snapshots.load())
        if STATE_KEY not in entries:
            return
        state = json.loads(entries.pop(STATE_KEY))
        buckets: list[tuple[BucketKey, Aggregate, int]] = []
        for name, raw in entries.items():
            doc = json.loads(raw)
            if name.startswith(REFERENCE_PREFIX):
                self.references[doc["digest"]] = (int(doc["from"]), Aggregate.from_json(doc["agg"]))
                continue
            if name.startswith(REPORTERS_PREFIX):  # a set: the replay below may add to it, never twice
                rollout_id, wave, digest = doc["key"]
                rkey = (str(rollout_id), int(wave), str(digest))
                self.view.reporters[rkey] = set(doc["ids"])
                self.view.reporters_last[rkey] = int(doc["last"])
                continue
            digest, device_class, rollout_id, wave = doc["cohort"]
            key: BucketKey = ((digest, device_class, rollout_id, wave), int(doc["bucket"]))
            buckets.append((key, Aggregate.from_json(doc["agg"]), int(doc["position"])))
        # Replay from the oldest position anything was saved at: each bucket then takes only what
        # it lacks, so a bucket saved by a lagging instance is completed, not double-counted.
        start = min([int(state["position"])] + [saved for _, _, saved in buckets])
        self.view.restore(
            position=start,
            folded=SequenceSet.from_json(state["folded"]),
            folded_at=int(state["position"]),
            windows=int(state["windows"]),
            late=int(state["late"]),
            buckets=buckets,
        )
        self._saved = {key: saved for key, _, saved in buckets}
        self.rollups_through = state.get("rollups_through")
        self.drift_through = state.get("drift_through")

    # --- rollups -------------------------------------------------------------------------------

    async def publish_rollups(self, now: datetime) -> int:
        """Publish every cohort's rollup of each minute (`rollup_seconds`) that ended over `grace`
        seconds ago."""
        if self.rollups_through is None:
            return 0
        period = self._rollup_seconds
        # After a long stop, minutes beyond the retention hold nothing to roll up: start after them.
        self.rollups_through = max(self.rollups_through, bucket_of(now, period) - self.view.retention_seconds)
        published = 0
        while self.rollups_through + 2 * period + self._grace <= now.timestamp():
            minute = self.rollups_through + period
            since, until = at(minute), at(minute + period)
            for key, aggregate in self.view.select(lambda _: True, since=since, until=until).items():
                stats = aggregate.stats(cohort_of(key), since, until)
                digest, device_class, rollout_id, wave = key
                subject = subjects.rollup(digest=digest, device_class=device_class, rollout_id=rollout_id, wave=wave)
                rollup_id = deterministic_id("telemetry.rollup", *map(str, key), str(minute))
                await self._announcer.rollup(TelemetryRollup(stats=stats), subject, rollup_id)
                published += 1
            self.rollups_through = minute
        self.metrics.rollups.inc(published)
        return published

    # --- drift ---------------------------------------------------------------------------------

    async def detect_drift(self, now: datetime) -> int:
        """Score each digest's periods that closed over `grace` seconds ago; publish drift onsets."""
        if self.drift_through is None:
            return 0
        period = self.drift.period_seconds
        self.drift_through = max(self.drift_through, bucket_of(now, period) - self.view.retention_seconds)
        found = 0
        while self.drift_through + 2 * period + self._grace <= now.timestamp():
            start = self.drift_through + period
            for digest in sorted({key[0][0] for key in self.view.buckets}):
                found += await self._drift_of(digest, start)
            self.drift_through = start
        return found

    async def _drift_of(self, digest: str, start: int) -> int:
        """Score `digest`'s period at `start` (and the `debounce` before it) against its references:
        the registry's evaluation-set outputs from the digest's first period, the fleet's first
        periods once they have closed."""
        policy = self.drift
        period = policy.period_seconds
        eval_outputs = await self._eval_outputs(digest)
        reference = self.references.get(digest) or await self._new_reference(digest, start + period)
        first = self._first_period(digest)
        scored_from = reference[0] if reference else None
        if eval_outputs is not None and first is not None:
            scored_from = first if scored_from is None else min(scored_from, first)
        if scored_from is None or start < scored_from:
            return 0
        starts = [s for s in (start - i * period for i in range(policy.debounce, -1, -1)) if s >= scored_from]
        history = [
            drift.scores(
                reference[1] if reference and s >= reference[0] else None,
                self._period(digest, s),
                eval_outputs=eval_outputs,
                min_requests=policy.min_requests,
            )
            for s in starts
        ]
        current = self._period(digest, start)
        onsets = drift.onsets(history, debounce=policy.debounce)
        for score in onsets:
            onset = starts[-policy.debounce]
            event = DriftDetected(
                model_digest=digest,
                metric=score.metric,
                method=score.method,
                reference=score.reference,
                reference_source=score.source,
                current=score.current,
                score=score.score,
                threshold=score.threshold,
                devices=max(1, current.devices.estimate()),
                window_start=at(onset),
                window_end=at(start + period),
            )
            await self._announcer.event(event, deterministic_id("drift.detected", digest, score.metric, str(onset)))
            self.metrics.drift.labels(score.metric).inc()
            log.warning("drift detected", extra={"digest": digest, "metric": score.metric, "score": score.score})
        return len(onsets)

    async def _eval_outputs(self, digest: str) -> dict[str, Moments] | None:
        """The registry's evaluation-set outputs of `digest` (kept once found: records are immutable;
        asked again on the next period while there are none)."""
        if digest in self.eval_outputs:
            return self.eval_outputs[digest]
        if self._catalog is None:
            return None
        found = await self._catalog.eval_outputs(digest)
        if found is None:
            return None
        self.eval_outputs[digest] = {
            name: Moments(count=m.count, mean=m.mean, variance=m.variance) for name, m in found.items()
        }
        return self.eval_outputs[digest]

    def _first_period(self, digest: str) -> int | None:
        buckets = [key[1] for key in self.view.buckets if key[0][0] == digest]
        return bucket_of(at(min(buckets)), self.drift.period_seconds) if buckets else None

    async def _new_reference(self, digest: str, closed_until: int) -> tuple[int, Aggregate] | None:
        """The digest's reference, once its first periods have closed (and saved with the snapshot)."""
        period = self.drift.period_seconds
        first = self._first_period(digest)
        if first is None:
            return None
        # Only the first `reference_periods` make the reference: building every period since the
        # first would rescan the view for each, every period, for as long as no reference forms.
        until = min(closed_until, first + self.drift.reference_periods * period)
        periods = [self._period(digest, s) for s in range(first, until, period)]
        ref = drift.reference_of(
            periods, reference_periods=self.drift.reference_periods, min_requests=self.drift.min_requests
        )
        if ref is None:
            return None
        scored_from = first + self.drift.reference_periods * period
        self.references[digest] = (scored_from, ref)
        doc = {"digest": digest, "from": scored_from, "agg": ref.to_json()}
        await self._snapshots.save(f"{REFERENCE_PREFIX}{digest}", _dumps(doc))
        return self.references[digest]

    def _period(self, digest: str, start: int) -> Aggregate:
        cohorts = self.view.select(
            lambda key: key[0] == digest, since=at(start), until=at(start + self.drift.period_seconds)
        )
        return merged(cohorts)

    # --- queries -------------------------------------------------------------------------------

    async def evaluate_gate(self, request: EvaluateGate) -> GateEvaluation:
        """Judge `request.gate` on the wave's cohort against the baseline cohort (see `EvaluateGate`)."""
        until = request.until or self._clock()

        def in_wave(key: CohortKey) -> bool:
            digest, device_class, rollout_id, wave = key
            return (
                rollout_id == request.rollout_id
                and wave is not None
                and (wave == request.wave or (request.through_wave and wave <= request.wave))
                and (request.device_class is None or device_class == request.device_class)
                and (not request.digests or digest in request.digests)
            )

        wave_cohorts = self.view.select(in_wave, since=request.since, until=until)
        classes = {request.device_class} if request.device_class else {key[1] for key in wave_cohorts}
        baseline_digests = set(request.baseline_digests)

        def in_baseline(key: CohortKey) -> bool:
            digest, device_class, rollout_id, _ = key
            return digest in baseline_digests and device_class in classes and rollout_id != request.rollout_id

        baseline_cohorts = (
            self.view.select(in_baseline, since=request.baseline_since or request.since, until=until)
            if baseline_digests and classes
            else {}
        )
        evaluation = judge(request.gate, merged(wave_cohorts), merged(baseline_cohorts) if baseline_cohorts else None)
        self.metrics.gate_evaluations.labels(evaluation.verdict).inc()
        if request.publish:
            event_id = deterministic_id(
                "gate.verdict",
                request.rollout_id,
                str(request.wave),
                request.device_class or "",
                request.gate.model_dump_json(),
                request.since.isoformat(),
                until.isoformat(),
            )
            await self._announcer.event(_verdict(request, evaluation), event_id)
            evaluation = evaluation.model_copy(update={"verdict_event_id": event_id})
        return evaluation

    async def reporters(self, request: ListReporters) -> Reporters:
        """The wave's devices that have sent a window on its digests, a page in id order."""
        ids: set[str] = set()
        for (rollout_id, wave, digest), members in self.view.reporters.items():
            if rollout_id == request.rollout_id and wave == request.wave:
                if not request.digests or digest in request.digests:
                    ids |= members
        ordered = sorted(i for i in ids if request.after is None or i > request.after)
        page = ordered[: request.limit]
        return Reporters(device_ids=page, more=len(ordered) > len(page), position=self.view.position)

    async def summarize(self, request: Summarize) -> TelemetrySummary:
        """Every cohort over the last `request.seconds` (of one digest, if given), busiest first."""
        now = self._clock()
        since = now - timedelta(seconds=request.seconds)
        cohorts = self.view.select(
            lambda key: request.model_digest is None or key[0] == request.model_digest, since=since, until=now
        )
        stats = sorted(
            (aggregate.stats(cohort_of(key), since, now) for key, aggregate in cohorts.items()),
            key=lambda s: (-s.requests, s.cohort.model_digest, s.cohort.device_class),
        )
        return TelemetrySummary(
            cohorts=stats[:MAX_SUMMARY_COHORTS],
            omitted=max(0, len(stats) - MAX_SUMMARY_COHORTS),
            position=self.view.position,
        )

    def _refresh_metrics(self, now: datetime) -> None:
        since = now - timedelta(seconds=MINUTE)
        cohorts = self.view.select(lambda _: True, since=since, until=now)
        stats = [aggregate.stats(cohort_of(key), since, now) for key, aggregate in cohorts.items()]
        self.metrics.show_cohorts({cohort_labels(s): s for s in stats})
        self.metrics.cohorts.set(len(self.view.buckets))
        self.metrics.fold_position.set(self.view.position)


def _verdict(request: EvaluateGate, evaluation: GateEvaluation) -> GateVerdict:
    gate = request.gate
    return GateVerdict(
        rollout_id=request.rollout_id,
        wave=request.wave,
        metric=gate.metric,
        comparator=gate.comparator,
        threshold=gate.threshold,
        compare_to_baseline=gate.compare_to_baseline,
        observed=evaluation.observed,
        baseline=evaluation.baseline,
        samples=evaluation.samples,
        min_samples=gate.min_samples,
        verdict=evaluation.verdict,
        device_class=request.device_class,
        baseline_samples=evaluation.baseline_samples,
        low=evaluation.low,
        high=evaluation.high,
        p_value=evaluation.p_value,
        reason=evaluation.reason[:2000],
    )


def _reporters_key(key: ReporterKey) -> str:
    rollout_id, wave, digest = key
    return f"{REPORTERS_PREFIX}{rollout_id}.{wave}.{digest}"


def _bucket_key(key: BucketKey) -> str:
    cohort, bucket = key
    digest = hashlib.sha256(json.dumps(list(cohort)).encode()).hexdigest()[:24]
    return f"bucket.{digest}.{bucket}"


def _dumps(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()
