"""Drift in memory: a stable fleet raises nothing, a real input shift raises one event per statistic
(with its evidence), one bad period alone raises nothing (debounce), and where the registry measured
the model on its evaluation set, output statistics are held against that from the first period."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from services.telemetry.adapters.memory import MemoryAnnouncer, MemoryFoldLog, MemoryModelCatalog, MemorySnapshots
from services.telemetry.service import DriftPolicy, TelemetryService
from services.telemetry.view import TelemetryView
from shared.messages.device import SIMILARITY_BOUNDS, OutputMoments
from shared.messages.telemetry import DriftDetected
from tests.unit.telemetry.test_service import Clock
from tests.unit.telemetry.windows import NEW, T0, window

BINS = len(SIMILARITY_BOUNDS) + 1
STABLE = [0] * (BINS - 4) + [2, 4, 8, 6]  # most outputs close to the device's reference centroid
SHIFTED = [0] * (BINS - 8) + [3, 5, 5, 3, 2, 1, 1, 0]  # further from it: inputs moved


def telemetry(clock: Clock, catalog: MemoryModelCatalog | None = None) -> TelemetryService:
    return TelemetryService(
        view=TelemetryView(bucket_seconds=10, retention_seconds=3600),
        log=MemoryFoldLog(),
        snapshots=MemorySnapshots(),
        announcer=MemoryAnnouncer(),
        clock=clock,
        rollup_grace_seconds=0,
        drift_policy=DriftPolicy(period_seconds=60, reference_periods=2, debounce=2, min_requests=500),
        catalog=catalog,
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


async def drift_events(
    *, minutes: int, shifted: set[int], catalog: MemoryModelCatalog | None = None
) -> list[DriftDetected]:
    clock = Clock(T0)
    svc = telemetry(clock, catalog)
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


def catalog_of(norm_mean: float) -> MemoryModelCatalog:
    """A registry that measured NEW's norms on its evaluation set (the fleet's are 1.0 ± 0.02)."""
    return MemoryModelCatalog(outputs={NEW: {"norm": OutputMoments(count=256, mean=norm_mean, variance=0.0004)}})


@pytest.mark.asyncio
async def test_outputs_like_the_evaluation_sets_raise_no_drift() -> None:
    catalog = catalog_of(1.0)
    assert await drift_events(minutes=8, shifted=set(), catalog=catalog) == []
    assert catalog.lookups == 1  # found once, kept: records are immutable


@pytest.mark.asyncio
async def test_outputs_unlike_the_evaluation_sets_drift_from_the_first_period() -> None:
    events = await drift_events(minutes=8, shifted=set(), catalog=catalog_of(0.9))

    (norm,) = events
    assert norm.metric == "output.norm" and norm.method == "standardized_shift"
    assert norm.reference_source == "eval_set" and norm.reference == 0.9
    assert norm.current == pytest.approx(1.0) and norm.score >= norm.threshold == 0.5
    # Minutes 0 and 1 breach: before the fleet's own reference (its first two periods) exists.
    assert norm.window_start == T0 and norm.window_end == T0 + timedelta(minutes=2)


@pytest.mark.asyncio
async def test_without_an_evaluation_set_the_first_periods_are_the_reference() -> None:
    catalog = MemoryModelCatalog()  # the digest is unknown to the registry, or has no evaluation set
    events = await drift_events(minutes=8, shifted={4, 5, 6, 7}, catalog=catalog)
    assert {(e.metric, e.reference_source) for e in events} == {("output.similarity", "first_periods")}
    assert catalog.lookups > 1  # asked again each period: the record may yet appear
