"""Which devices of a rollout wave have reported telemetry (`telemetry.reporters`): the fact the
rollout service's "healthy" needs, kept exactly across replicas, restarts and redeliveries."""

from __future__ import annotations

from datetime import timedelta

from services.telemetry.adapters.memory import MemoryFoldLog, MemorySnapshots
from services.telemetry.service import TelemetryService
from shared.messages.telemetry import ListReporters
from tests.unit.telemetry.test_service import Clock, service
from tests.unit.telemetry.windows import NEW, OLD, T0, window


def windows() -> list[tuple[int, object]]:
    """Wave 0 of r1: dev-0..dev-9 on NEW (dev-9 twice); wave 1: dev-10, dev-11; dev-12 on OLD in
    wave 1 (another digest); dev-13 by hand (no rollout)."""
    made = [window(f"dev-{i}", [5.0], wave=0) for i in range(10)]
    made += [window("dev-9", [5.0], wave=0, start=T0 + timedelta(seconds=10))]
    made += [window(f"dev-{i}", [5.0], wave=1) for i in (10, 11)]
    made += [window("dev-12", [5.0], wave=1, digest=OLD), window("dev-13", [5.0], rollout_id=None, wave=None)]
    return list(enumerate(made, start=1))


async def reporters(svc: TelemetryService, wave: int, **fields: object) -> list[str]:
    found: list[str] = []
    after = None
    while True:
        page = await svc.reporters(ListReporters(rollout_id="r1", wave=wave, after=after, **fields))  # type: ignore[arg-type]
        found += page.device_ids
        if not page.more:
            return found
        after = page.device_ids[-1]


async def test_the_devices_of_a_wave_that_sent_a_window_on_its_digests() -> None:
    svc = service(MemoryFoldLog())
    await svc.start()
    await svc.ingest(windows())
    assert await reporters(svc, 0) == sorted(f"dev-{i}" for i in range(10))
    assert await reporters(svc, 1) == ["dev-10", "dev-11", "dev-12"]
    assert await reporters(svc, 1, digests=[NEW]) == ["dev-10", "dev-11"]
    assert await reporters(svc, 0, limit=3) == sorted(f"dev-{i}" for i in range(10)), "paged, in id order"
    first = await svc.reporters(ListReporters(rollout_id="r1", wave=0, limit=3))
    assert first.device_ids == ["dev-0", "dev-1", "dev-2"] and first.more


async def test_replicas_agree_and_a_restart_restores_them_from_the_snapshot() -> None:
    batch = windows()
    log, snapshots = MemoryFoldLog(), MemorySnapshots()
    a, b = service(log, snapshots), service(log)
    await a.start()
    await b.start()
    await a.ingest(batch[:6])
    await b.ingest(batch[4:])  # overlaps: a redelivery to the other replica
    await a.tick()
    assert await reporters(a, 0) == await reporters(b, 0) == sorted(f"dev-{i}" for i in range(10))
    await a.save_snapshot(a._clock())
    assert any(k.startswith("reporters.r1.0.") for k in snapshots.entries)

    restarted = service(log, snapshots)
    await restarted.start()
    assert await reporters(restarted, 1) == ["dev-10", "dev-11", "dev-12"]
    assert await restarted.ingest(batch) == 0


async def test_a_wave_nobody_reported_on_within_the_retention_is_forgotten() -> None:
    clock = Clock(T0 + timedelta(minutes=5))
    snapshots = MemorySnapshots()
    svc = service(MemoryFoldLog(), snapshots, clock=clock)
    await svc.start()
    await svc.ingest(windows())
    await svc.save_snapshot(clock())
    clock.now = T0 + timedelta(hours=2)  # the retention is an hour
    await svc.save_snapshot(clock())
    assert await reporters(svc, 0) == [] and not any(k.startswith("reporters.") for k in snapshots.entries)
