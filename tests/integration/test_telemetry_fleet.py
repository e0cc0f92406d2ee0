"""The telemetry service fed by real devices, not hand-made windows: the edge agent and the fleet
simulator publish their own schema-2 windows to the real nats-server, and the service (its own
process) summarises them per cohort, judges a gate on a rollout wave, and detects the drift of a
simulated input shift while a stable fleet on another digest raises none, and holds a fleet's outputs
against what the registry measured on the model's evaluation set.

The session's telemetry instance (tests/conftest.py), with drift timings short enough for a test
(5 s buckets, 5 s periods, a reference of 2 periods, debounce 2, grace 2 s).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import onnx
import pytest
from nats.aio.client import Client
from onnx import TensorProto, helper, numpy_helper

from services.edge_agent.fleet.config import SimulationConfig
from services.edge_agent.fleet.simulator import FleetSimulator
from services.edge_agent.http_api import serve
from services.telemetry.distinct import DistinctCounter
from shared import subjects, topology
from shared.artifacts import ArtifactStore
from shared.clients import RegistryClient
from shared.clients.telemetry import TelemetryClient
from shared.messages.device import TelemetryWindow
from shared.messages.envelope import decode
from shared.messages.registry import ModelDetail
from shared.messages.rollout import Gate
from shared.messages.telemetry import CohortStats, DriftDetected, EvaluateGate
from shared.settings import Settings
from tests.conftest import (
    TELEMETRY_BUCKET_SECONDS,
    TELEMETRY_DEBOUNCE,
    TELEMETRY_GRACE_SECONDS,
    TELEMETRY_MIN_REQUESTS,
    TELEMETRY_PERIOD_SECONDS,
    TELEMETRY_REFERENCE_PERIODS,
    ServiceRunner,
)
from tests.integration.test_agent import desire, running_agent, wait_for
from tests.integration.test_registry import register
from tests.integration.test_telemetry import verdicts_of
from tests.support import as_simulator, assign, sample_files, stream_messages, unique

pytestmark = pytest.mark.usefixtures("running_registry")

BUCKET_SECONDS = TELEMETRY_BUCKET_SECONDS
PERIOD_SECONDS = TELEMETRY_PERIOD_SECONDS
REFERENCE_PERIODS = TELEMETRY_REFERENCE_PERIODS
DEBOUNCE = TELEMETRY_DEBOUNCE
MIN_REQUESTS = TELEMETRY_MIN_REQUESTS
GRACE_SECONDS = TELEMETRY_GRACE_SECONDS


async def registered(nc: Client, artifacts: ArtifactStore, tmp_path: Path, *, seed: int) -> ModelDetail:
    model, _ = sample_files(tmp_path / f"m{seed}", seed=seed)  # seeds 5101-5104: used by no other test
    name = unique("telfleet")
    assert (await register(nc, artifacts, model, name, "1.0")).status == "applied"
    return await RegistryClient(nc, source="tests").get_model(name, "1.0")


async def summary_of(
    client: TelemetryClient, digest: str, *, until: Callable[[list[CohortStats]], bool], timeout: float = 30.0
) -> list[CohortStats]:
    """The digest's cohorts over the last hour, once `until(cohorts)` holds (or the timeout passes)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        cohorts = (await client.summarize(model_digest=digest, seconds=3600)).cohorts
        if until(cohorts) or asyncio.get_running_loop().time() > deadline:
            return cohorts
        await asyncio.sleep(0.25)


async def windows_of(nc: Client, prefix: str, *, device: bool = False) -> list[TelemetryWindow]:
    """Every window the devices `<prefix>-*` (or the one device `prefix`) put on the telemetry
    stream, validated."""
    subject = subjects.telemetry(prefix) if device else "slmops.telemetry.*"
    out = []
    for body, _ in await stream_messages(nc, subject, timeout=0.5):
        data = body.get("data") if isinstance(body, dict) else None  # the fuzz test's junk is there too
        if not isinstance(data, dict):
            continue
        if device or str(data.get("device_id", "")).startswith(prefix + "-"):
            out.append(decode(json.dumps(body).encode(), expected=(TelemetryWindow,)).data)
    return out


def distinct(device_ids: Iterable[str]) -> int:
    """What the service's device count says for exactly these devices (a HyperLogLog estimate:
    two ids in one register count once, so 20 devices may read 19; see `distinct.py`)."""
    counter = DistinctCounter()
    for device_id in device_ids:
        counter.add(device_id)
    return counter.estimate()


async def converged(sim: FleetSimulator, digest: str, revisions: dict[str, int], *, timeout: float = 20) -> bool:
    return await sim.wait_until(lambda: len(sim.converged_on(digest, revisions)) == len(revisions), timeout=timeout)


async def until_scored(nc: Client, period_start: datetime, *, timeout: float = 30.0) -> None:
    """Once the service has scored the drift period starting at `period_start` for every digest: its
    progress (`drift_through`, saved with each snapshot) is set once all of them have been."""
    kv = await nc.jetstream().key_value(topology.KV_TELEMETRY)
    deadline = time.monotonic() + timeout
    while (json.loads((await kv.get("state")).value or b"{}").get("drift_through") or 0) < period_start.timestamp():
        assert time.monotonic() < deadline, f"the period from {period_start} was not scored in {timeout} s"
        await asyncio.sleep(0.2)


async def drift_events(nc: Client, digests: set[str]) -> list[DriftDetected]:
    found = []
    for body, _ in await stream_messages(nc, "slmops.evt.drift.detected", timeout=0.3):
        if body["data"]["model_digest"] in digests:
            found.append(decode(json.dumps(body).encode(), expected=(DriftDetected,)).data)
    return found


# --- 1. a real edge agent ---------------------------------------------------------------------------


async def test_a_real_agent_feeds_the_service_what_it_served(
    settings: Settings, running_telemetry: ServiceRunner, nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """The agent installs a model and serves requests over its HTTP API; the service's summary of
    that digest is the agent's: its device, its class, exactly the requests it served, a p95."""
    detail = await registered(nc, artifacts, tmp_path, seed=5101)
    digest = detail.version.artifact.digest
    device = unique("telagent")
    served = 7
    async with running_agent(settings, tmp_path / "state", device) as agent:  # rpi5, a window per 0.5 s
        await wait_for(nc, device, await desire(nc, device, detail), "active")
        server = serve(agent, port=0)
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/v1/infer"
            for i in range(served):
                ids = [101, 5 + i, 6 + i, 102]
                body = json.dumps({"inputs": {"input_ids": [ids], "attention_mask": [[1] * len(ids)]}}).encode()
                request = urllib.request.Request(url, data=body, method="POST")
                with urllib.request.urlopen(request, timeout=10) as resp:
                    assert json.loads(resp.read())["digest"] == digest
        finally:
            server.shutdown()
        for _ in range(40):  # the window holding the last request is sent at most 0.5 s later
            if sum(w.request_count for w in await windows_of(nc, device, device=True)) >= served:
                break
            await asyncio.sleep(0.25)
    # The agent has stopped: every window it sent is on the stream, and the service folds each once.
    stored = [w for w in await windows_of(nc, device, device=True) if w.model_digest == digest]
    assert sum(w.request_count for w in stored) == served
    cohorts = await summary_of(
        TelemetryClient(nc, source="tests"), digest, until=lambda cs: sum(c.windows for c in cs) >= len(stored)
    )
    (stats,) = cohorts
    assert stats.cohort.model_dump() == {
        "model_digest": digest,
        "device_class": "rpi5",  # the agent's class, named in its windows
        "rollout_id": None,  # desired by hand
        "wave": None,
    }
    assert stats.devices == 1 and stats.windows == len(stored) >= 1
    assert stats.requests == served and stats.errors == 0 and stats.error_rate == 0.0
    assert stats.latency_p95_ms is not None and 0 < stats.latency_p50_ms <= stats.latency_p95_ms  # type: ignore[operator]
    assert stats.outputs["norm"].count == served  # one output row per request


# --- 2. the fleet simulator, on a rollout wave -------------------------------------------------------


async def test_a_simulated_fleet_feeds_cohorts_per_class_and_a_gate_judges_its_wave(
    settings: Settings, running_telemetry: ServiceRunner, nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """30 simulated devices (rpi5/jetson 20/10, two running real inference) on a model desired as
    wave 0 of a rollout: the service counts every window they published, exactly once, in one
    cohort per class, and an error_rate gate on the wave answers with the same numbers."""
    detail = await registered(nc, artifacts, tmp_path, seed=5102)
    digest = detail.version.artifact.digest
    rollout = unique("r")
    config = SimulationConfig(
        devices=30,
        mix={"rpi5": 2, "jetson": 1},
        real_inference=2,
        id_prefix=unique("telsim"),
        window_seconds=0.5,  # 120 windows in about 2 s
        request_rate=10.0,
        measure_requests=100,
    )
    since = datetime.now(UTC) - timedelta(seconds=BUCKET_SECONDS)
    async with FleetSimulator(as_simulator(settings), config) as sim:
        classes = {d.device_id: d.device_class.name for d in sim.devices}
        revisions = await assign(nc, list(classes), detail, rollout_id=rollout)
        assert await converged(sim, digest, revisions, timeout=30)
        assert await sim.wait_until(lambda: sim.messages["telemetry"] >= 120, timeout=30)
    stored = [w for w in await windows_of(nc, config.id_prefix) if w.model_digest == digest]
    assert stored and all((w.rollout_id, w.wave) == (rollout, 0) for w in stored)
    per_class: dict[str, list[TelemetryWindow]] = defaultdict(list)
    for w in stored:
        per_class[w.device_class].append(w)

    client = TelemetryClient(nc, source="tests")
    cohorts = await summary_of(client, digest, until=lambda cs: sum(c.windows for c in cs) >= len(stored))
    by_class = {c.cohort.device_class: c for c in cohorts}
    assert set(by_class) == {"rpi5", "jetson"} and len(cohorts) == 2
    for name, stats in by_class.items():
        assert (stats.cohort.rollout_id, stats.cohort.wave) == (rollout, 0)
        mine = per_class[name]
        assert stats.windows == len(mine), f"{name}: every window once"
        assert stats.requests == sum(w.request_count for w in mine)
        assert stats.errors == sum(w.error_count for w in mine)
        assert {w.device_id for w in mine} == {d for d, c in classes.items() if c == name}
        assert stats.devices == distinct(d for d, c in classes.items() if c == name)
        assert stats.latency_p95_ms is not None
    # A jetson is faster than an rpi5 (speed factors): the class cohorts keep them apart.
    assert by_class["jetson"].latency_p50_ms < by_class["rpi5"].latency_p50_ms  # type: ignore[operator]

    def ask(device_class: str | None = None) -> EvaluateGate:
        gate = Gate(metric="error_rate", comparator="<=", threshold=0.05, min_samples=100)
        return EvaluateGate(rollout_id=rollout, wave=0, since=since, device_class=device_class, gate=gate)

    whole = await client.evaluate_gate(ask())
    requests = sum(s.requests for s in cohorts)
    errors = sum(s.errors for s in cohorts)
    assert whole.verdict == "Successful", whole.reason
    assert whole.method == "threshold" and whole.samples == requests and whole.devices == distinct(classes)
    assert whole.observed == pytest.approx(errors / requests) and whole.wave_value == whole.observed
    jetson = await client.evaluate_gate(ask("jetson"))
    assert (jetson.verdict, jetson.samples) == ("Successful", by_class["jetson"].requests)
    assert jetson.devices == by_class["jetson"].devices
    verdicts = await verdicts_of(nc, rollout, 2)
    assert sorted((v["device_class"] or "", v["samples"]) for v in verdicts) == sorted(
        [("", requests), ("jetson", jetson.samples)]
    )


# --- 3. drift on a simulated input shift --------------------------------------------------------------

CONVERGE_SECONDS = 10.0  # the most the shifted fleet may take from its start to its first window (~1 s)
# Seconds after the shifted fleet starts (at the start of a period): its reference, the first two
# periods from its first window, has closed by then if that window came within CONVERGE_SECONDS.
SHIFT_AFTER = CONVERGE_SECONDS + (REFERENCE_PERIODS - 1) * PERIOD_SECONDS


async def test_an_input_shift_is_detected_as_drift_and_a_stable_fleet_raises_none(
    settings: Settings, running_telemetry: ServiceRunner, nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """Two simulated fleets of 20 jetsons, on two digests, run side by side. The shifted fleet's
    inputs all shift SHIFT_AFTER s in (real inference on a narrow band of the vocabulary, against
    the unshifted reference); the stable fleet's never do. The service builds each digest's
    reference from its first two 5 s periods, scores every later one, and publishes drift.detected
    on output.similarity for the shifted digest, with its onset after the shift, and nothing at all
    for the stable digest, whose every period over the same time held enough requests to be scored."""
    stable_model = await registered(nc, artifacts, tmp_path, seed=5103)
    shifted_model = await registered(nc, artifacts, tmp_path, seed=5104)
    stable, shifted = stable_model.version.artifact.digest, shifted_model.version.artifact.digest

    def fleet(prefix: str, *, shift: bool) -> SimulationConfig:
        return SimulationConfig(
            devices=20,
            mix={"jetson": 1},  # one class: every period holds the same mix as the reference
            real_inference=0,
            id_prefix=unique(prefix),
            window_seconds=1.0,
            request_rate=20.0,  # ~2,000 requests a period, over MIN_REQUESTS
            measure_requests=200,
            input_shift_after=SHIFT_AFTER if shift else None,
            input_shift_share=1.0,
        )

    calm, moved = fleet("calm", shift=False), fleet("moved", shift=True)
    async with FleetSimulator(as_simulator(settings), calm) as calm_sim:
        # The shifted fleet starts SHIFT_AFTER s before a period starts, so its shift falls at the start
        # of that period and both fleets have CONVERGE_SECONDS to converge.
        await asyncio.sleep((-SHIFT_AFTER - time.time()) % PERIOD_SECONDS)
        shift_at = datetime.now(UTC) + timedelta(seconds=SHIFT_AFTER)  # the shift is at or a little after this
        async with FleetSimulator(as_simulator(settings), moved) as moved_sim:
            assert all(d.inputs_shift for d in moved_sim.devices)
            assert not any(d.inputs_shift for d in calm_sim.devices)
            calm_revisions = await assign(nc, [d.device_id for d in calm_sim.devices], stable_model)
            moved_revisions = await assign(nc, [d.device_id for d in moved_sim.devices], shifted_model)
            assert await converged(calm_sim, stable, calm_revisions)
            assert await converged(moved_sim, shifted, moved_revisions)
            # Each digest's reference is its first two periods from its first window, which starts
            # after this (within a tick): both close before the shift.
            first_period = int(time.time() + 1) // PERIOD_SECONDS * PERIOD_SECONDS
            assert first_period + REFERENCE_PERIODS * PERIOD_SECONDS <= shift_at.timestamp(), "converged too late"

            deadline = shift_at + timedelta(seconds=(DEBOUNCE + 2) * PERIOD_SECONDS + GRACE_SECONDS + 5)
            while datetime.now(UTC) < deadline:
                seen = await drift_events(nc, {stable, shifted})
                found = [e for e in seen if e.model_digest == shifted and e.metric == "output.similarity"]
                if found:
                    # The stable digest's period too, the one that made the shifted one's event.
                    await until_scored(nc, found[0].window_end - timedelta(seconds=PERIOD_SECONDS))
                    break
                await asyncio.sleep(0.5)
            assert moved_sim.report().events["windows_on_shifted_inputs"] > 0
    events = await drift_events(nc, {stable, shifted})

    assert [e for e in events if e.model_digest == stable] == [], "the stable fleet drifted"
    similarity = [e for e in events if e.model_digest == shifted and e.metric == "output.similarity"]
    assert len(similarity) == 1, similarity  # one event per episode
    (event,) = similarity
    assert event.method == "psi" and event.score >= event.threshold == 0.1
    assert event.current < event.reference  # shifted inputs: further from the reference centroid
    assert 1 <= event.devices <= 20
    assert event.window_end - event.window_start == timedelta(seconds=DEBOUNCE * PERIOD_SECONDS)
    assert event.window_start > shift_at - timedelta(seconds=PERIOD_SECONDS)  # its onset holds shifted windows
    assert all(e.window_end > shift_at for e in events), "drift reported before the inputs shifted"

    # Both references were built, from periods that ended before the shift.
    kv = await nc.jetstream().key_value(topology.KV_TELEMETRY)
    references = {d: json.loads((await kv.get(f"reference.{d}")).value or b"{}") for d in (stable, shifted)}
    assert all(r["from"] <= shift_at.timestamp() for r in references.values()), references
    # Every period of the stable digest from its reference to the end of the shifted episode had
    # enough requests to be scored: its silence is a verdict, not a lack of data.
    requests: Counter[int] = Counter()
    for w in await windows_of(nc, calm.id_prefix):
        requests[int(w.window_start.timestamp()) // PERIOD_SECONDS * PERIOD_SECONDS] += w.request_count
    scored = range(references[stable]["from"], int(event.window_end.timestamp()), PERIOD_SECONDS)
    assert len(scored) >= DEBOUNCE and all(requests[p] >= MIN_REQUESTS for p in scored), requests

    port = running_telemetry.env["SLMOPS_TELEMETRY_METRICS_PORT"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'slmops_telemetry_drift_detected_total{metric="output.similarity"}' in text


# --- 4. drift against the registry's evaluation set ----------------------------------------------


def regression_model(directory: Path, *, seed: int) -> tuple[Path, Path]:
    """A small dense regression head, `y = x @ W` with x float [batch, 8], and an evaluation set of
    64 standard-normal rows: the inputs the simulator sends unshifted (shifted ones are offset by 1)."""
    rng = np.random.default_rng(seed)
    weights = (np.eye(8) + 0.05 * rng.standard_normal((8, 8))).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "head", [x], [y], [numpy_helper.from_array(weights, "w")]
    )
    directory.mkdir(parents=True, exist_ok=True)
    model, eval_set = directory / "head.onnx", directory / "head-eval.npz"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    np.savez(eval_set, x=rng.standard_normal((64, 8)).astype(np.float32))
    return model, eval_set


async def test_outputs_unlike_the_evaluation_set_s_drift_from_the_first_period(
    settings: Settings, running_telemetry: ServiceRunner, nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """Training-serving skew, which no reference made of the fleet's own first windows can see: two
    fleets of 20 jetsons on two digests of a regression head registered with its evaluation set. The
    registry measures each digest's outputs on it (KV `models`); the skewed fleet's inputs are offset
    from the first request on, the matching fleet's look like the evaluation set. The service holds
    both against the registry's numbers from their first period: the skewed digest drifts on its
    output norm and values (reference_source eval_set) as soon as the debounce allows, the matching
    one raises nothing."""
    digests = {}
    for kind, seed in (("matching", 5105), ("skewed", 5106)):
        model, eval_set = regression_model(tmp_path / kind, seed=seed)
        name = unique(f"tel{kind}")
        assert (await register(nc, artifacts, model, name, "1.0", eval_set=eval_set)).status == "applied"
        detail = await RegistryClient(nc, source="tests").get_model(name, "1.0")
        assert detail.version.eval_outputs is not None and detail.version.eval_outputs.rows == 64
        digests[kind] = detail

    def fleet(prefix: str, *, skewed: bool) -> SimulationConfig:
        return SimulationConfig(
            devices=20,
            mix={"jetson": 1},
            real_inference=0,
            id_prefix=unique(prefix),
            window_seconds=1.0,
            request_rate=20.0,
            measure_requests=200,
            input_shift_after=0.0 if skewed else None,
            input_shift_share=1.0,
        )

    matching, skewed = digests["matching"].version.artifact.digest, digests["skewed"].version.artifact.digest
    async with (
        FleetSimulator(as_simulator(settings), fleet("match", skewed=False)) as match_sim,
        FleetSimulator(as_simulator(settings), fleet("skew", skewed=True)) as skew_sim,
    ):
        match_revisions = await assign(nc, [d.device_id for d in match_sim.devices], digests["matching"])
        skew_revisions = await assign(nc, [d.device_id for d in skew_sim.devices], digests["skewed"])
        assert await converged(match_sim, matching, match_revisions)
        assert await converged(skew_sim, skewed, skew_revisions)
        deadline = time.monotonic() + (DEBOUNCE + REFERENCE_PERIODS + 2) * PERIOD_SECONDS + GRACE_SECONDS + 10
        while time.monotonic() < deadline:
            found = await drift_events(nc, {skewed})
            if {e.metric for e in found} >= {"output.norm", "output.value"}:
                # The matching digest's period too, the one that made the skewed one's events.
                await until_scored(nc, max(e.window_end for e in found) - timedelta(seconds=PERIOD_SECONDS))
                break
            await asyncio.sleep(0.5)
        skew_prefix = skew_sim.config.id_prefix
    events = await drift_events(nc, {matching, skewed})
    first = min(w.window_start for w in await windows_of(nc, skew_prefix) if w.model_digest == skewed)
    first_period = datetime.fromtimestamp(int(first.timestamp()) // PERIOD_SECONDS * PERIOD_SECONDS, UTC)

    assert [e for e in events if e.model_digest == matching] == [], "outputs like the evaluation set's drifted"
    by_metric = {e.metric: e for e in events}
    assert set(by_metric) == {"output.norm", "output.value"}, events  # similarity: the fleet's own reference
    recorded = digests["skewed"].version.eval_outputs
    assert recorded is not None
    for name in ("norm", "value"):
        event = by_metric[f"output.{name}"]
        assert event.reference_source == "eval_set" and event.method == "standardized_shift"
        assert event.reference == pytest.approx(recorded.outputs[name].mean)
        assert event.current > event.reference and event.score >= event.threshold == 0.5
        # From the digest's first periods: before they could have become a reference of their own.
        assert event.window_start < first_period + timedelta(seconds=REFERENCE_PERIODS * PERIOD_SECONDS)
