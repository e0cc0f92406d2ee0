"""Drift in memory: a stable fleet raises nothing, a real input shift raises one event per statistic
(with its evidence), and one bad period alone raises nothing (debounce)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from services.telemetry.adapters.memory import MemoryAnnouncer, MemoryFoldLog, MemorySnapshots
from services.telemetry.service import DriftPolicy, TelemetryService
from services.telemetry.view import TelemetryView
from shared.messages.device import SIMILARITY_BOUNDS
from shared.messages.telemetry import DriftDetected
from tests.unit.telemetry.test_service import Clock
from tests.unit.telemetry.windows import NEW, T0, window

BINS = len(SIMILARITY_BOUNDS) + 1
STABLE = [0] * (BINS - 4) + [2, 4, 8, 6]  # most outputs close to the device's reference centroid
SHIFTED = [0] * (BINS - 8) + [3, 5, 5, 3, 2, 1, 1, 0]  # further from it: inputs moved


def telemetry(clock: Clock) -> TelemetryService:
    return TelemetryService(
        view=TelemetryView(bucket_seconds=10, retention_seconds=3600),
        log=MemoryFoldLog(),
        snapshots=MemorySnapshots(),
        announcer=MemoryAnnouncer(),
        clock=clock,
        rollup_grace_seconds=0,
        drift_policy=DriftPolicy(period_seconds=60, reference_periods=2, debounce=2, min_requests=500),
    )


async def feed(svc: TelemetryService, minutes: int, *, shifted: set[int]) -> None:
    rng = np.random.default_rng(5)
    position = 0
    for minute in range(minutes):
        batch = []
        for d in range(10):
            for w in range(6):
                position += 1
                moved = minute in shifted
                batch.append(
                    (
                        position,
                        window(
                            f"dev-{d}",
                            rng.lognormal(2.0, 0.2, size=20).tolist(),
                            digest=NEW,
                            rollout_id=None,
                            wave=None,
                            start=T0 + timedelta(minutes=minute, seconds=10 * w),
                            similarity=SHIFTED if moved else STABLE,
                            norm=(1.0, 0.0004),
                        ),
                    )
                )
        await svc.ingest(batch)


async def drift_events(*, minutes: int, shifted: set[int]) -> list[DriftDetected]:
    clock = Clock(T0)
    svc = telemetry(clock)
    await svc.start()
    await feed(svc, minutes, shifted=shifted)
    clock.now = T0 + timedelta(minutes=minutes + 1, seconds=1)
    await svc.tick()
    await svc.tick()  # a second look changes nothing: one event per episode
    assert NEW in svc.references  # judged against a reference, not skipped for want of one
    announcer = svc._announcer
    assert isinstance(announcer, MemoryAnnouncer)
    return [e for e in announcer.events.values() if isinstance(e, DriftDetected)]


@pytest.mark.asyncio
async def test_a_stable_fleet_raises_no_drift() -> None:
    assert await drift_events(minutes=8, shifted=set()) == []


@pytest.mark.asyncio
async def test_an_input_shift_raises_one_event_with_its_evidence() -> None:
    events = await drift_events(minutes=8, shifted={4, 5, 6, 7})

    (similarity,) = [e for e in events if e.metric == "output.similarity"]
    assert similarity.method == "psi" and similarity.score >= similarity.threshold == 0.1
    assert similarity.current < similarity.reference
    assert similarity.window_start == T0 + timedelta(minutes=4) and similarity.devices == 10
    assert {e.metric for e in events} == {"output.similarity"}  # latency and norms did not move


@pytest.mark.asyncio
async def test_one_bad_period_alone_is_no_drift() -> None:
    assert await drift_events(minutes=8, shifted={4}) == []
