"""The telemetry service's use cases in memory: exactly-once folding across instances, redeliveries
and restarts; gates with all three verdicts; rollups once per cohort-minute."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import numpy as np
import pytest

from services.telemetry.adapters.memory import MemoryAnnouncer, MemoryFoldLog, MemorySnapshots
from services.telemetry.service import TelemetryService
from services.telemetry.view import BucketMismatch, TelemetryView
from shared.messages.rollout import Gate, GateVerdict
from shared.messages.telemetry import EvaluateGate, Summarize, TelemetryRollup
from tests.unit.telemetry.windows import NEW, OLD, T0, window

pytestmark = pytest.mark.asyncio


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def service(
    log: MemoryFoldLog, snapshots: MemorySnapshots | None = None, *, clock: Clock | None = None
) -> TelemetryService:
    return TelemetryService(
        view=TelemetryView(bucket_seconds=10, retention_seconds=3600),
        log=log,
        snapshots=snapshots or MemorySnapshots(),
        announcer=MemoryAnnouncer(),
        clock=clock or Clock(T0 + timedelta(minutes=5)),
        rollup_grace_seconds=5,
    )


def fleet(n_devices: int = 40, windows_each: int = 5, *, seed: int = 0) -> list[tuple[int, object]]:
    rng = np.random.default_rng(seed)
    out = []
    position = 0
    for d in range(n_devices):
        for w in range(windows_each):
            position += 1
            lat = rng.lognormal(2.0, 0.3, size=20).tolist()
            out.append(
                (
                    position,
                    window(
                        f"dev-{d}",
                        lat,
                        device_class=("rpi5", "jetson")[d % 2],
                        start=T0 + timedelta(seconds=10 * w),
                        errors=int(rng.integers(0, 2)),
                    ),
                )
            )
    return out


def totals(svc: TelemetryService) -> dict[object, tuple[int, int, int, list[int]]]:
    buckets = sorted(svc.view.buckets.items())
    return {key: (agg.windows, agg.requests, agg.errors, agg.latency.counts) for key, agg in buckets}


async def test_two_instances_on_one_log_fold_exactly_what_one_instance_does() -> None:
    batch = fleet()
    alone = service(MemoryFoldLog())
    await alone.start()
    for i in range(0, len(batch), 25):
        await alone.ingest(batch[i : i + 25])

    shared_log = MemoryFoldLog()
    a, b = service(shared_log), service(shared_log)
    await a.start()
    await b.start()
    rng = random.Random(1)
    chunks = [batch[i : i + 25] for i in range(0, len(batch), 25)]
    for chunk in chunks:
        await rng.choice((a, b)).ingest(chunk)
    # Redeliveries, to either instance, of windows the other one folded: skipped.
    for chunk in rng.sample(chunks, 3):
        assert await rng.choice((a, b)).ingest(chunk) == 0
    await a.tick()
    await b.tick()

    assert totals(a) == totals(b) == totals(alone)
    assert a.view.windows == len(batch)


async def test_a_restarted_instance_resumes_from_its_snapshot_without_counting_twice() -> None:
    batch = fleet()
    log, snapshots = MemoryFoldLog(), MemorySnapshots()
    first = service(log, snapshots)
    await first.start()
    await first.ingest(batch[:100])
    await first.save_snapshot(first._clock())
    await first.ingest(batch[100:150])  # folded, not yet snapshotted: the log has it

    restarted = service(log, snapshots)
    await restarted.start()
    assert await restarted.ingest(batch[50:150]) == 0  # redelivered after the "crash": all known
    await restarted.ingest(batch[150:])

    reference = service(MemoryFoldLog())
    await reference.start()
    await reference.ingest(batch)
    assert totals(restarted) == totals(reference)


async def test_a_bucket_saved_by_a_lagging_instance_is_completed_on_restore_not_double_counted() -> None:
    batch = fleet()
    log, snapshots = MemoryFoldLog(), MemorySnapshots()
    ahead, behind = service(log, snapshots), service(log, snapshots)
    await ahead.start()
    await behind.start()
    await ahead.ingest(batch[:60])
    await behind.save_snapshot(behind._clock())  # behind has not caught up: its snapshot is older
    await ahead.ingest(batch[60:120])
    await ahead.save_snapshot(ahead._clock())
    await behind.tick()  # catches up, then saves over ahead's state with its own (now equal) view

    restored = service(log, snapshots)
    await restored.start()
    reference = service(MemoryFoldLog())
    await reference.start()
    await reference.ingest(batch[:120])
    assert totals(restored) == totals(reference)


def gate_request(gate: Gate, **changes: object) -> EvaluateGate:
    fields: dict[str, object] = {
        "rollout_id": "r1",
        "wave": 0,
        "since": T0,
        "until": T0 + timedelta(minutes=2),
        "gate": gate,
        "baseline_digests": [OLD],
    }
    return EvaluateGate(**(fields | changes))


async def wave_and_baseline(svc: TelemetryService, *, slowdown: float, n: int = 30, requests: int = 40) -> None:
    rng = np.random.default_rng(7)
    windows = []
    for d in range(n):
        base = rng.lognormal(2.0, 0.25, size=requests).tolist()
        windows.append(window(f"old-{d}", base, digest=OLD, rollout_id=None, wave=None))
        new = (rng.lognormal(2.0, 0.25, size=requests) * slowdown).tolist()
        windows.append(window(f"new-{d}", new))
    await svc.ingest(list(enumerate(windows, start=1)))


@pytest.mark.parametrize(
    ("slowdown", "verdict"),
    [(1.0, "Successful"), (1.5, "Failed")],
)
async def test_a_statistical_gate_judges_the_wave_against_the_devices_still_on_the_old_model(
    slowdown: float, verdict: str
) -> None:
    svc = service(MemoryFoldLog())
    await svc.start()
    await wave_and_baseline(svc, slowdown=slowdown)
    gate = Gate(metric="latency_p95_ms", comparator="<=", threshold=1.1, compare_to_baseline="mann_whitney")

    result = await svc.evaluate_gate(gate_request(gate))

    assert result.verdict == verdict, result.reason
    assert result.samples == 30 * 40 and result.baseline_samples == 30 * 40
    assert result.low is not None and result.high is not None and result.low <= result.observed <= result.high
    assert abs(result.observed - slowdown) < 0.05 * slowdown
    published = svc._announcer.events[result.verdict_event_id]  # type: ignore[attr-defined]
    assert isinstance(published, GateVerdict) and published.verdict == verdict


async def test_too_few_samples_or_no_baseline_is_inconclusive_with_the_reason() -> None:
    svc = service(MemoryFoldLog())
    await svc.start()
    await wave_and_baseline(svc, slowdown=1.0, n=2, requests=10)
    few = await svc.evaluate_gate(gate_request(Gate(metric="error_rate", comparator="<=", threshold=0.1)))
    assert few.verdict == "Inconclusive" and "under min_samples (100)" in few.reason

    ratio = Gate(metric="latency_p95_ms", comparator="<=", threshold=1.1, compare_to_baseline="ratio", min_samples=5)
    none = await svc.evaluate_gate(gate_request(ratio, baseline_digests=["c" * 64]))
    assert none.verdict == "Inconclusive" and none.reason.startswith("no baseline")


async def test_threshold_and_ratio_gates_read_the_merged_numbers() -> None:
    svc = service(MemoryFoldLog())
    await svc.start()
    await wave_and_baseline(svc, slowdown=1.3)
    ratio = Gate(metric="latency_p95_ms", comparator="<=", threshold=1.1, compare_to_baseline="ratio")
    judged = await svc.evaluate_gate(gate_request(ratio))
    assert judged.verdict == "Failed" and 1.15 < judged.observed < 1.45
    errors = await svc.evaluate_gate(gate_request(Gate(metric="error_rate", comparator="<=", threshold=0.01)))
    assert errors.verdict == "Successful" and errors.observed == 0.0


async def test_each_closed_minute_is_rolled_up_once_per_cohort() -> None:
    clock = Clock(T0 + timedelta(seconds=30))
    svc = service(MemoryFoldLog(), clock=clock)
    await svc.start()
    await svc.ingest(fleet(n_devices=4, windows_each=6))
    clock.now = T0 + timedelta(minutes=1, seconds=4)
    assert await svc.publish_rollups(clock.now) == 0  # the minute is over, its grace is not
    clock.now = T0 + timedelta(minutes=1, seconds=6)
    assert await svc.publish_rollups(clock.now) == 2  # two classes
    assert await svc.publish_rollups(clock.now) == 0
    rollups = svc._announcer.rollups  # type: ignore[attr-defined]
    stats = [r.stats for _, r in rollups.values() if isinstance(r, TelemetryRollup)]
    assert sum(s.windows for s in stats) == 24 and {s.devices for s in stats} == {2}
    assert all(subject.startswith("slmops.rollup." + NEW) for subject, _ in rollups.values())


async def test_summary_lists_each_cohort_with_its_numbers() -> None:
    svc = service(MemoryFoldLog(), clock=Clock(T0 + timedelta(minutes=1)))
    await svc.start()
    await svc.ingest(fleet(n_devices=4, windows_each=3))
    summary = await svc.summarize(Summarize(seconds=600))
    assert [s.cohort.device_class for s in summary.cohorts] == ["jetson", "rpi5"] or len(summary.cohorts) == 2
    assert sum(s.windows for s in summary.cohorts) == 12
    assert all(s.latency_p95_ms and s.latency_relative_error for s in summary.cohorts)


async def test_a_replica_with_another_bucket_width_refuses_the_log() -> None:
    log = MemoryFoldLog()
    first = service(log)
    await first.start()
    await first.ingest(fleet(n_devices=2, windows_each=2))
    other = TelemetryService(
        view=TelemetryView(bucket_seconds=5, retention_seconds=3600),
        log=log,
        snapshots=MemorySnapshots(),
        announcer=MemoryAnnouncer(),
    )
    with pytest.raises(BucketMismatch, match="every replica must run with the same SLMOPS_TELEMETRY_BUCKET_SECONDS"):
        await other.start()


async def test_after_a_long_stop_rollups_resume_within_the_retention() -> None:
    clock = Clock(T0 + timedelta(minutes=3))
    svc = service(MemoryFoldLog(), clock=clock)
    await svc.start()
    await svc.ingest(fleet(n_devices=2, windows_each=6))
    svc.rollups_through = int((T0 - timedelta(days=30)).timestamp())  # as restored from an old snapshot
    svc.drift_through = svc.rollups_through

    assert await svc.publish_rollups(clock.now) == 2  # the data's minute, per class; no month of empty minutes
    assert svc.rollups_through >= int((T0 - timedelta(hours=1)).timestamp())
    await svc.detect_drift(clock.now)
    assert svc.drift_through >= int((T0 - timedelta(hours=1)).timestamp())
