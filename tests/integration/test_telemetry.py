"""The telemetry service against the real nats-server, with authentication: windows devices publish
are folded exactly once, invalid ones end in the DLQ with their reason, the gate RPC answers all
three verdicts with real numbers and publishes gate.verdict, rollups and /metrics are published,
and two instances on one durable, one of them killed mid-way, count exactly what one instance does."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
from nats.aio.client import Client

from services.telemetry.adapters.memory import MemoryAnnouncer, MemoryFoldLog, MemorySnapshots
from services.telemetry.service import TelemetryService
from services.telemetry.view import TelemetryView
from shared import bus, subjects
from shared.clients.telemetry import TelemetryClient
from shared.messages.device import TelemetryWindow
from shared.messages.envelope import deterministic_id, encode, wrap
from shared.messages.rollout import Gate
from shared.messages.telemetry import CohortStats, EvaluateGate, Summarize
from shared.settings import Settings
from tests.conftest import TELEMETRY_GRACE_SECONDS, TELEMETRY_ROLLUP_SECONDS, ServiceRunner, telemetry_env
from tests.support import device_settings, dlq_entries, enroll, stream_messages
from tests.unit.telemetry.windows import window

ROLLUP_SECONDS = TELEMETRY_ROLLUP_SECONDS


def digest() -> str:
    return uuid.uuid4().hex * 2


async def publish(nc: Client, windows: list[TelemetryWindow]) -> None:
    """As the devices would: each on its own subject, with the agent's de-duplicating id."""
    js = nc.jetstream()
    for w in windows:
        env = wrap(w, source=f"device:{w.device_id}", id=deterministic_id(w.device_id, w.window_start.isoformat()))
        await js.publish(subjects.telemetry(w.device_id), encode(env), headers={"Nats-Msg-Id": env.id})


async def counted(client: TelemetryClient, digests: set[str], windows: int, *, timeout: float = 30) -> dict:
    """Per cohort (digest, class), the service's summary once it counts `windows` on `digests`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        summary = await client.summarize(seconds=3600)
        mine = [s for s in summary.cohorts if s.cohort.model_digest in digests]
        if sum(s.windows for s in mine) >= windows or asyncio.get_running_loop().time() > deadline:
            return {(s.cohort.model_digest, s.cohort.device_class, s.cohort.rollout_id): s for s in mine}
        await asyncio.sleep(0.2)


async def test_a_device_feeds_the_service_and_bad_windows_reach_the_dlq_with_their_reason(
    settings: Settings, running_telemetry: ServiceRunner, nc: Client
) -> None:
    new = digest()
    device_id = f"tel-{uuid.uuid4().hex[:8]}"
    device_nc = await bus.connect(device_settings(settings, enroll(settings, device_id)), name=device_id)
    start = datetime.now(UTC) - timedelta(seconds=20)
    try:
        await publish(device_nc, [window(device_id, [5.0, 6.0, 7.0], digest=new, start=start)])
        bad = window(device_id, [5.0], digest=new, start=start + timedelta(seconds=10)).model_dump(mode="json")
        bad["request_count"] = 4
        body = json.loads(encode(wrap(window(device_id, [1.0], digest=new), source="x")))
        body["data"] = bad
        await device_nc.jetstream().publish(subjects.telemetry(device_id), json.dumps(body).encode())
        extra = window(device_id, [1.0], digest=new).model_dump(mode="json") | {"inputs": [[1, 2]]}
        body["data"] = extra
        await device_nc.jetstream().publish(subjects.telemetry(device_id), json.dumps(body).encode())
    finally:
        await device_nc.close()
    # A window naming another device, on this one's subject (only an admin can even publish it).
    other = window("someone-else", [1.0], digest=new)
    await nc.jetstream().publish(subjects.telemetry(device_id), encode(wrap(other, source="x")))

    client = TelemetryClient(nc, source="tests")
    cohorts = await counted(client, {new}, 1)
    (stats,) = cohorts.values()
    assert (stats.windows, stats.requests, stats.devices) == (1, 3, 1)
    reasons = [e["Slmops-Dlq-Reason"] for e in await _dlq(nc, new)]
    assert any("latency counts sum to 1, not request_count (4)" in r for r in reasons), reasons
    assert any("inputs" in r and "Extra inputs are not permitted" in r for r in reasons), reasons
    assert any("must travel on slmops.telemetry.someone-else" in r for r in reasons), reasons


async def verdicts_of(nc: Client, rollout_id: str, count: int, *, timeout: float = 10) -> list[dict]:
    """The gate.verdict events of `rollout_id` on the event stream, once there are `count` (each
    evaluation publishes its verdict before it answers, so they are there; read until they all are)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        verdicts = [
            body["data"]
            for body, _ in await stream_messages(nc, "slmops.evt.gate.verdict", timeout=0.3)
            if body["data"]["rollout_id"] == rollout_id
        ]
        if len(verdicts) >= count or asyncio.get_running_loop().time() > deadline:
            return verdicts
        await asyncio.sleep(0.2)


async def _dlq(nc: Client, marker: str) -> list[dict[str, str]]:
    for _ in range(50):
        found = await dlq_entries(nc, containing=marker)
        if len(found) >= 3:
            return found
        await asyncio.sleep(0.2)
    return found


def fleet(new: str, old: str, rollout: str, *, slowdown: float, devices: int = 20) -> list[TelemetryWindow]:
    rng = np.random.default_rng(3)
    start = datetime.now(UTC) - timedelta(seconds=40)
    out = []
    for d in range(devices):
        for w in range(2):
            at = start + timedelta(seconds=10 * w)
            base = rng.lognormal(2.0, 0.25, size=30).tolist()
            out.append(window(f"{rollout}-old-{d}", base, digest=old, rollout_id=None, wave=None, start=at))
            slow = (rng.lognormal(2.0, 0.25, size=30) * slowdown).tolist()
            out.append(window(f"{rollout}-new-{d}", slow, digest=new, rollout_id=rollout, wave=0, start=at))
    return out


async def test_the_gate_rpc_answers_all_three_verdicts_with_real_numbers_and_publishes_them(
    running_telemetry: ServiceRunner, nc: Client
) -> None:
    new, old, rollout = digest(), digest(), f"r-{uuid.uuid4().hex[:8]}"
    await publish(nc, fleet(new, old, rollout, slowdown=1.4))
    client = TelemetryClient(nc, source="tests")
    await counted(client, {new, old}, 80)
    since = datetime.now(UTC) - timedelta(minutes=5)

    def ask(gate: Gate) -> EvaluateGate:
        return EvaluateGate(rollout_id=rollout, wave=0, since=since, gate=gate, digests=[new], baseline_digests=[old])

    ok = await client.evaluate_gate(ask(Gate(metric="error_rate", comparator="<=", threshold=0.05)))
    slower = await client.evaluate_gate(
        ask(Gate(metric="latency_p95_ms", comparator="<=", threshold=1.1, compare_to_baseline="mann_whitney"))
    )
    few = await client.evaluate_gate(ask(Gate(metric="error_rate", comparator="<=", threshold=0.05, min_samples=10**6)))

    assert (ok.verdict, ok.observed, ok.samples, ok.devices) == ("Successful", 0.0, 1200, 20)  # exact: few devices
    assert slower.verdict == "Failed", slower.reason
    assert slower.low is not None and 1.3 < slower.low <= slower.observed <= slower.high < 1.5
    assert slower.baseline_samples == 1200 and slower.p_value is not None and slower.p_value < 0.001
    assert few.verdict == "Inconclusive" and "under min_samples" in few.reason
    verdicts = await verdicts_of(nc, rollout, 3)
    assert sorted(v["verdict"] for v in verdicts) == ["Failed", "Inconclusive", "Successful"]
    # The devices the rollout service would count as reporting: the wave's, not the baseline's.
    reporting = await client.reporters(rollout_id=rollout, wave=0, digests=[new])
    assert reporting == {f"{rollout}-new-{d}" for d in range(20)}


async def test_rollups_and_metrics_are_published(
    running_telemetry: ServiceRunner, nc: Client, settings: Settings
) -> None:
    new = digest()
    # In the current rollup period (TELEMETRY_ROLLUP_SECONDS here, a minute by default): its rollup is
    # published once it has ended and its grace passed (a window for a period already rolled up is
    # late, counted but not re-published). So the windows go in with at least half the period left.
    if ROLLUP_SECONDS - time.time() % ROLLUP_SECONDS < ROLLUP_SECONDS / 2:
        await asyncio.sleep(ROLLUP_SECONDS - time.time() % ROLLUP_SECONDS)  # to the next period
    this_period = datetime.fromtimestamp(time.time() // ROLLUP_SECONDS * ROLLUP_SECONDS, UTC)
    await publish(
        nc,
        [window(f"roll-{i}", [4.0, 8.0], digest=new, rollout_id=None, wave=None, start=this_period) for i in range(3)],
    )
    deadline = time.monotonic() + ROLLUP_SECONDS + TELEMETRY_GRACE_SECONDS + 30
    while not (rollups := await stream_messages(nc, f"slmops.rollup.{new}.>", timeout=0.3)):
        assert time.monotonic() < deadline, "no rollup"
        await asyncio.sleep(0.2)
    (body, headers), *_ = rollups
    assert body["type"] == "telemetry.rollup" and body["data"]["stats"]["windows"] == 3
    stats = CohortStats.model_validate(body["data"]["stats"])
    assert (stats.since, stats.until) == (this_period, this_period + timedelta(seconds=ROLLUP_SECONDS))
    assert headers["Nats-Msg-Id"] == body["id"]
    port = running_telemetry.env["SLMOPS_TELEMETRY_METRICS_PORT"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "slmops_telemetry_windows_total" in text and "slmops_telemetry_rejected_total" in text
    assert "slmops_telemetry_lag_windows" in text and "slmops_telemetry_cohort_latency_ms" in text


async def test_two_instances_one_killed_mid_way_count_exactly_what_one_instance_does(
    settings: Settings, running_telemetry: ServiceRunner, nc: Client
) -> None:
    new, old, rollout = digest(), digest(), f"r-{uuid.uuid4().hex[:8]}"
    windows = fleet(new, old, rollout, slowdown=1.1, devices=150)
    second = ServiceRunner("telemetry", settings, env=telemetry_env())
    await asyncio.to_thread(second.start)
    try:
        await publish(nc, windows[: len(windows) // 2])
        await asyncio.sleep(0.3)
        second.kill9()  # mid-way: whatever it fetched and did not ack is redelivered
        await publish(nc, windows[len(windows) // 2 :])
        await asyncio.to_thread(second.start)
        cohorts = await counted(TelemetryClient(nc, source="tests"), {new, old}, len(windows), timeout=60)
    finally:
        second.stop()

    alone = TelemetryService(
        view=TelemetryView(bucket_seconds=10, retention_seconds=3600),
        log=MemoryFoldLog(),
        snapshots=MemorySnapshots(),
        announcer=MemoryAnnouncer(),
    )
    await alone.start()
    await alone.ingest(list(enumerate(windows, start=1)))
    expected = {
        (s.cohort.model_digest, s.cohort.device_class, s.cohort.rollout_id): s
        for s in (await alone.summarize(Summarize(seconds=3600))).cohorts
    }

    def numbers(s: CohortStats) -> tuple[object, ...]:
        return (s.windows, s.requests, s.errors, s.devices, s.latency_p50_ms, s.latency_p95_ms, s.latency_p99_ms)

    assert {k: numbers(s) for k, s in cohorts.items()} == {k: numbers(s) for k, s in expected.items()}
