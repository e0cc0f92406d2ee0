"""The simulator's telemetry paths against their interleavings with an install, without a bus.

A window's labels (`rollout_id`, `wave`) must be those of the desired state its digest was
installed or kept for, whatever the install does while the window is open or being published.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracer, StatusCode, Tracer

from services.edge_agent.desired import Desired
from services.edge_agent.fleet.artifacts import CachedArtifact
from services.edge_agent.fleet.classes import BUILT_IN
from services.edge_agent.fleet.config import SimulationConfig
from services.edge_agent.fleet.device import LoadTiming, SimDevice, SimInstall
from services.edge_agent.fleet.faults import Fault
from services.edge_agent.fleet.inference import InferenceResult
from services.edge_agent.fleet.simulator import ConfigDigests, FleetSimulator
from shared.messages.common import config_digest
from shared.messages.device import DesiredState, DeviceStatus, TelemetryWindow
from shared.settings import Settings
from tests.unit.edge_agent.conftest import DEVICE, desired_state
from tests.unit.edge_agent.fleet.test_device import World

V1, V2 = "1" * 64, "2" * 64
ROLLOUT = desired_state(V2, shadow=True, rollout_id="r1", wave=0)
BY_HAND = desired_state(V1)
TIMING = LoadTiming(load_ms=1.0, smoke_ms=0.1)


class Worker:
    """The inference worker's `infer`: every request served at once, with a unit output."""

    real_requests = 0

    async def infer(
        self, model: tuple[str, str], shadow: tuple[str, str] | None, *, seed: int, index: int, shifted: bool = False
    ) -> InferenceResult:
        await asyncio.sleep(0)
        return InferenceResult(
            latency_ms=1.0, output=np.full((1, 4), 0.5, dtype=np.float32), agreed=None if shadow is None else True
        )


def simulator(*, settings: Settings | None = None, tracer: Tracer | None = None, **config: object) -> FleetSimulator:
    cfg = SimulationConfig(devices=1, mix={"rpi5": 1}, **config)  # type: ignore[arg-type]
    sim = FleetSimulator(settings or Settings(), cfg, tracer=tracer)
    sim.worker = Worker()  # type: ignore[assignment]
    sim.artifacts = {d: CachedArtifact(digest=d, size_bytes=1000, path=Path(f"/{d[:1]}.onnx")) for d in (V1, V2)}
    return sim


def on_v1(*, real_inference: bool) -> SimDevice:
    """A device serving V1, set by hand, from slot a."""
    dev = SimDevice(
        device_id=DEVICE,
        index=0,
        device_class=BUILT_IN["rpi5"],
        fault=None,
        connection=0,
        real_inference=real_inference,
        rng=random.Random(0),
    )
    dev.slots["a"], dev.active = V1, "a"
    return dev


def labels(windows: list[TelemetryWindow]) -> set[tuple[str, str | None, int | None]]:
    return {(w.model_digest, w.rollout_id, w.wave) for w in windows}


async def run_real(
    sim: FleetSimulator, dev: SimDevice, during_publish: Callable[[int], Awaitable[None]], *, windows: int
) -> list[TelemetryWindow]:
    """Run `dev`'s real-inference loop until it has published `windows` windows; `during_publish(n)`
    runs while the n-th publish is in flight (the loop is suspended in it)."""
    published: list[TelemetryWindow] = []
    done = asyncio.Event()

    async def publish(device: SimDevice, window: TelemetryWindow | None) -> None:
        if window is None:
            return
        published.append(window)
        await during_publish(len(published))
        if len(published) >= windows:
            done.set()

    sim._publish_window = publish  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(sim._real_inference(dev))
    try:
        await asyncio.wait_for(done.wait(), timeout=10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return published


async def test_a_real_window_opened_across_a_switch_names_the_digest_it_serves() -> None:
    """The interleaving of the CI failure: a V1 window falls due and is being published when the
    install switches to V2 for a rollout; the next window must still name what it serves."""
    sim, dev = simulator(window_seconds=0.02, request_rate=2000.0), on_v1(real_inference=True)

    async def switch_during_first_publish(n: int) -> None:
        if n == 1:
            await SimInstall(dev, World()).switch("b", TIMING, ROLLOUT, config_digest=None)

    windows = await run_real(sim, dev, switch_during_first_publish, windows=4)
    assert labels(windows) == {(V1, None, None), (V2, "r1", 0)}
    assert all(w.shadow is None or w.shadow.previous_digest == V1 for w in windows if w.model_digest == V2)
    assert all(w.shadow is None for w in windows if w.model_digest == V1)


async def test_a_real_window_opened_across_a_rollback_names_nothing() -> None:
    sim, dev = simulator(window_seconds=0.02, request_rate=2000.0), on_v1(real_inference=True)
    dev.slots["b"] = V2
    await SimInstall(dev, World()).switch("b", TIMING, ROLLOUT, config_digest=None)

    async def roll_back_during_first_publish(n: int) -> None:
        if n == 1:
            await SimInstall(dev, World()).switch("a", TIMING, BY_HAND, config_digest=None)

    windows = await run_real(sim, dev, roll_back_during_first_publish, windows=4)
    assert labels(windows) == {(V2, "r1", 0), (V1, None, None)}


async def test_a_keep_for_another_desired_state_closes_the_real_window() -> None:
    """V2 kept for the next wave: the window open under wave 0 closes at the keep, long before it is
    due, so no window holds requests served for wave 1 under wave 0's labels."""
    sim, dev = simulator(window_seconds=1.0, request_rate=2000.0), on_v1(real_inference=True)
    dev.slots["b"] = V2
    await SimInstall(dev, World()).switch("b", TIMING, ROLLOUT, config_digest=None)
    kept_at: list[datetime] = []

    async def keep_during_first_window() -> None:
        await asyncio.sleep(0.05)
        await dev.converge(Desired(state=ROLLOUT.model_copy(update={"wave": 1}), revision=5), World())
        kept_at.append(datetime.now(UTC))

    async def publish_at_once(n: int) -> None:
        return None

    keeper = asyncio.create_task(keep_during_first_window())
    first, second = await run_real(sim, dev, publish_at_once, windows=2)
    await keeper
    assert (first.rollout_id, first.wave) == ("r1", 0) and (second.rollout_id, second.wave) == ("r1", 1)
    assert first.window_end < kept_at[0] + timedelta(seconds=0.3) < first.window_start + timedelta(seconds=1.0)
    assert first.window_end <= second.window_start


async def drawn_window_during_active(dev: SimDevice, state: DesiredState, revision: int) -> list[datetime | None]:
    """Converge `dev` on `state` with a drawn window open; where that window started, as a tick would
    see it while the `active` status is in flight (the install is suspended in its publish)."""
    world = World()
    seen: list[datetime | None] = []

    async def publish(device: SimDevice, status: DeviceStatus) -> None:
        if status.step == "active":
            seen.append(device.window_start)

    world.publish = publish  # type: ignore[method-assign]
    dev.window_start = datetime.now(UTC)
    await dev.converge(Desired(state=state, revision=revision), world)
    return seen


@pytest.mark.parametrize(
    ("first", "then"),
    [(BY_HAND, ROLLOUT), (ROLLOUT, BY_HAND), (ROLLOUT, ROLLOUT.model_copy(update={"wave": 1}))],
    ids=["switch-to-rollout", "switch-back-by-hand", "kept-for-the-next-wave"],
)
async def test_a_drawn_window_is_closed_when_what_serves_changes(first: DesiredState, then: DesiredState) -> None:
    """The switch itself (or a keep for another desired state) closes the drawn window, not the
    `active` status published after it: a tick in between draws nothing across the change."""
    dev = on_v1(real_inference=False)
    dev.slots["b"] = V2
    await dev.converge(Desired(state=first, revision=1), World())
    assert await drawn_window_during_active(dev, then, 2) == [None]
    assert dev.serving == (then.digest, then.rollout_id, then.wave)


async def test_the_same_desired_state_again_keeps_the_drawn_window() -> None:
    dev = on_v1(real_inference=False)
    (started,) = await drawn_window_during_active(dev, BY_HAND, 1)
    assert started is not None and dev.window_start == started


# --- install spans ----------------------------------------------------------------------------------

TRACE_ID, PARENT_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


async def install_spans(state: DesiredState, *, fault: Fault | None = None) -> InMemorySpanExporter:
    """Run one simulated install of `state` through the simulator's own install task; its spans."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sim = simulator(tracer=provider.get_tracer("tests"))
    world = World()
    if fault is Fault.CORRUPT:
        world.bad_digests.add(state.digest)
    sim._envs = [cast(Any, world)]
    dev = on_v1(real_inference=False)
    sim.devices, sim._by_id = [dev], {dev.device_id: dev}
    sim._converge(dev, Desired(state=state, revision=3))
    assert dev.task is not None
    await dev.task
    provider.shutdown()
    return exporter


async def test_a_simulated_install_is_one_span_continuing_the_traceparent() -> None:
    state = ROLLOUT.model_copy(update={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    (span,) = (await install_spans(state)).get_finished_spans()
    assert span.name == "device.install" and span.context is not None and span.parent is not None
    assert (f"{span.context.trace_id:032x}", f"{span.parent.span_id:016x}") == (TRACE_ID, PARENT_ID)
    assert dict(span.attributes or {}) == {
        "slmops.device_id": DEVICE,
        "slmops.device_class": "rpi5",
        "slmops.digest": V2,
        "slmops.desired_revision": 3,
        "slmops.rollout_id": "r1",
        "slmops.wave": 0,
        "slmops.outcome": "active",
    }


async def test_a_failed_simulated_install_is_an_error_span() -> None:
    (span,) = (await install_spans(ROLLOUT, fault=Fault.CORRUPT)).get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR and (span.attributes or {})["slmops.outcome"] == "failed"


def test_tracing_off_in_the_settings_is_the_no_op_tracer() -> None:
    assert isinstance(simulator(settings=Settings(otel_exporter="none")).tracer, NoOpTracer)


# --- settings --------------------------------------------------------------------------------------


def test_the_fleet_hashes_each_distinct_settings_once_however_many_devices_get_them() -> None:
    digests = ConfigDigests(size=2)
    entries = [
        desired_state(V2, device_id=f"sim-{i:05d}", config={"lang": "de", "limits": {"max_tokens": 64}})
        for i in range(100)
    ]
    parsed = [Desired.from_entry(e.model_dump_json().encode(), revision=7, digest_of=digests) for e in entries]
    assert {d.config_digest for d in parsed} == {config_digest({"lang": "de", "limits": {"max_tokens": 64}})}
    assert digests.computed == 1


@pytest.mark.parametrize(
    ("left", "right"),
    [({"a": 1}, {"a": 1.0}), ({"a": 1}, {"a": True}), ({"a": 0.0}, {"a": -0.0}), ({"a": [1, 2]}, {"a": [2, 1]})],
)
def test_settings_equal_in_python_but_not_in_json_keep_their_own_digest(
    left: dict[str, Any], right: dict[str, Any]
) -> None:
    digests = ConfigDigests()
    assert (digests(left), digests(right)) == (config_digest(left), config_digest(right))
    assert digests(left) != digests(right) and digests.computed == 2


def test_the_remembered_settings_are_bounded() -> None:
    digests = ConfigDigests(size=2)
    for i in range(5):
        assert digests({"i": i}) == config_digest({"i": i})
    assert len(digests._known) == 2 and digests({"i": 4}) == config_digest({"i": 4}) and digests.computed == 5


async def test_a_simulated_device_says_in_its_hello_which_settings_serve() -> None:
    sim = simulator()
    dev = on_v1(real_inference=False)
    await dev.converge(Desired(state=desired_state(V1, config={"lang": "de"}), revision=2), World())
    sent: list[Any] = []

    class Connection:
        async def publish(self, subject: str, payload: Any, *, msg_id: str, source: str) -> bool:
            sent.append(payload)
            return True

    sim.connections = [cast(Any, Connection())]
    await sim._hello(dev)
    assert sent[0].active_digest == V1 and sent[0].config_digest == config_digest({"lang": "de"})
