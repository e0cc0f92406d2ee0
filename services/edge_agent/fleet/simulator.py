"""The fleet simulator: N devices in one process, speaking the device protocol over real NATS.

Per process, not per device, and why:
* one KV watcher on every key of `desired`, dispatching by key (a watcher per device would be N
  ordered consumers on the server);
* one heartbeat/telemetry ticker walking the devices (N sleeping tasks would cost memory for
  nothing); an install is a task only while it runs;
* a few NATS connections (see `connections.py`), the artifact cache (see `artifacts.py`) and the
  inference worker (see `inference.py`).

Everything a device says is its own, on its own subjects: hello, statuses with the KV revision of
the desired state they are about (and the digest of the settings serving with its model), and
telemetry windows (schema 2: the device's class, and the rollout and wave of the desired state its
model serves for). A rollout gives its devices equal settings, so their digest is computed once per
distinct settings, not once per device (`ConfigDigests`).

Simulated input shift (`SimulationConfig.input_shift_after`): from that moment, a share of the
devices draw their windows from a second real measurement of the artifact over shifted inputs
(`inference.measure_shifted`), and the real-inference ones among them run shifted inputs, so drift
detection is tested on outputs that really moved.

Each install is one `device.install` span (`install_trace.py`), continuing the trace in the
desired state's `traceparent`, with the device's class: one span per install, recorded when it
is over, and no step spans. The tracer is the process's (`slmops fleet simulate` installs its
provider), a no-op when the settings turn tracing off (`SLMOPS_OTEL_EXPORTER=none`), or the one
passed in.

The inference worker is a spawned process, so a script that embeds the simulator needs the usual
`if __name__ == "__main__":` guard (the `slmops` entry point and pytest have it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import marshal
import random
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import numpy as np
import onnxruntime as ort
from nats.js.kv import KV_DEL, KV_PURGE
from opentelemetry import trace
from pydantic import ValidationError

from services.edge_agent.desired import Desired
from services.edge_agent.errors import LoadFailed
from services.edge_agent.fleet import resources
from services.edge_agent.fleet.artifacts import ArtifactCache, CachedArtifact
from services.edge_agent.fleet.classes import DeviceClass, known_class, load_classes
from services.edge_agent.fleet.config import SimulationConfig
from services.edge_agent.fleet.connections import FleetConnection
from services.edge_agent.fleet.device import DeviceCrashed, InstallPolicy, LoadTiming, Presence, SimDevice
from services.edge_agent.fleet.errors import FleetConfigError
from services.edge_agent.fleet.faults import Fault, assign_faults
from services.edge_agent.fleet.inference import InferenceWorker
from services.edge_agent.fleet.mix import assign_classes, stratified_sample
from services.edge_agent.fleet.report import ClassSummary, Convergence, FleetReport, Resources, SharedWork
from services.edge_agent.fleet.telemetry import busy_percent, draw_window, model_ram_mb
from services.edge_agent.install_trace import record_install_span
from services.edge_agent.link import status_message_id, telemetry_message_id
from services.edge_agent.telemetry import FIRST_WINDOW_SECONDS, REFERENCE_REQUESTS, ReferenceCentroid, WindowRecorder
from shared import subjects, topology
from shared.messages.common import config_digest
from shared.messages.device import DesiredState, DeviceHello, DeviceStatus, InstallStep, TelemetryWindow
from shared.messages.envelope import new_id
from shared.messages.registry import DownloadUrl
from shared.settings import Settings

AGENT_VERSION = "fleet-sim-0.1.0"
TICK_SECONDS = 0.5
HELLO_CONCURRENCY = 4000
log = logging.getLogger("slmops.fleet")


def _ort_release() -> str:
    match = re.match(r"\d+\.\d+(\.\d+)?", ort.__version__)
    return match.group(0) if match else "1.0"


class FleetSimulator:
    """Run with `async with FleetSimulator(settings, config) as sim:`; `sim.report()` at any time.

    Args:
        settings: where the platform is; `otel_exporter="none"` turns the install spans off.
        config: the fleet.
        profiles_dir: the device profiles the classes' speed factors come from (default: `deploy/profiles`).
        tracer: where install spans go (default: the process's tracer provider, or a no-op one
            when the settings turn tracing off).
    """

    def __init__(
        self,
        settings: Settings,
        config: SimulationConfig,
        *,
        profiles_dir: Path | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        if tracer is None:
            tracer = trace.NoOpTracer() if settings.otel_exporter == "none" else trace.get_tracer("slmops.fleet")
        self.tracer = tracer
        self.classes: dict[str, DeviceClass] = load_classes(profiles_dir)
        for name in config.mix:
            known_class(name, self.classes)
        self.policy = InstallPolicy(
            download_attempts=config.download_attempts,
            download_backoff=config.download_backoff,
            slow_factor=config.slow_factor,
        )
        self.connections: list[FleetConnection] = []
        self._envs: list[_Env] = []  # one per connection: what its devices install through
        self.devices: list[SimDevice] = []
        self._by_id: dict[str, SimDevice] = {}
        self.rng = random.Random(config.seed)
        self._np_rng = np.random.default_rng(config.seed)
        self._workdir: Path | None = None
        self.cache: ArtifactCache | None = None
        self.worker = InferenceWorker(requests=config.measure_requests, seed=config.seed)
        self.artifacts: dict[str, CachedArtifact] = {}  # every digest fetched, for loads and telemetry
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._timers: list[asyncio.TimerHandle] = []
        self.steps: Counter[str] = Counter()
        self.messages: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self._ort_version = _ort_release()
        self.config_digests = ConfigDigests()
        self._labels = {"fleet": config.id_prefix, "simulated": "true", **config.labels}
        self._started = 0.0
        self._shift_at: float | None = None  # loop time from which shifted devices' inputs shift
        self._shifting: set[str] = set()  # digests being measured on shifted inputs
        self._connected: float | None = None
        self._cpu0 = 0.0
        self._rss0 = 0.0
        self._rss_peak = 0.0

    # --- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> FleetSimulator:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _platform_key(self) -> str:
        path = self.settings.signing_key_file.with_suffix(".pub")
        try:
            return path.read_text()
        except OSError:
            raise FleetConfigError(
                f"no registry public key at {path}: pass the pinned key (SimulationConfig.registry_key_pem)"
            ) from None

    async def start(self) -> None:
        """Connect, create the devices, send every first hello, then follow the desired states."""
        loop = asyncio.get_running_loop()
        self._cpu0, self._rss0 = resources.cpu_seconds(), resources.rss_mb()
        self._rss_peak = self._rss0
        self._started = loop.time()
        cfg = self.config
        if cfg.input_shift_after is not None:
            self._shift_at = self._started + cfg.input_shift_after
        self.connections = list(
            await asyncio.gather(
                *(
                    FleetConnection.open(self.settings, index=i, share_download_urls=cfg.share_download_urls)
                    for i in range(cfg.connection_count)
                )
            )
        )
        self._envs = [_Env(self, conn) for conn in self.connections]
        self._workdir = Path(tempfile.mkdtemp(prefix="slmops-fleet-"))
        self.cache = ArtifactCache(self._workdir, public_key_pem=cfg.registry_key_pem or self._platform_key())
        await self.worker.start()
        self._create_devices()
        await self._first_hellos()
        self._connected = loop.time()
        self._loops.append(asyncio.create_task(self._follow_desired(), name="fleet-desired"))
        self._loops.append(asyncio.create_task(self._tick(), name="fleet-ticker"))
        for dev in self.devices:
            if dev.real_inference:
                self._loops.append(asyncio.create_task(self._real_inference(dev), name=f"real-{dev.device_id}"))
            if dev.fault is Fault.OFFLINE:
                self._timers.append(loop.call_later(cfg.offline_after, self._go_offline, dev))

    async def stop(self) -> None:
        """Cancel everything the simulator runs, close the connections, remove the cache."""
        for timer in self._timers:
            timer.cancel()
        pending = [*self._loops, *self._tasks, *(d.task for d in self.devices if d.task is not None)]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._loops.clear()
        for conn in self.connections:
            with contextlib.suppress(Exception):
                await conn.close()
        self.worker.stop()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def _create_devices(self) -> None:
        cfg = self.config
        classes = assign_classes(cfg.devices, cfg.mix)
        faults = assign_faults(cfg.devices, cfg.faults, seed=cfg.seed)
        real = set(stratified_sample(classes, cfg.real_inference_count))
        shifting = set(stratified_sample(classes, cfg.input_shift_count, rng=random.Random(cfg.seed + 1)))
        connections = len(self.connections)
        for index, (cls, fault) in enumerate(zip(classes, faults, strict=True)):
            dev = SimDevice(
                device_id=cfg.device_id(index),
                index=index,
                device_class=self.classes[cls],
                fault=fault,
                connection=index % connections,
                real_inference=index in real,
                rng=self.rng,
                inputs_shift=index in shifting,
            )
            self.devices.append(dev)
            self._by_id[dev.device_id] = dev

    async def _first_hellos(self) -> None:
        limit = asyncio.Semaphore(HELLO_CONCURRENCY)
        now = asyncio.get_running_loop().time()

        async def hello(dev: SimDevice) -> None:
            async with limit:
                await self._hello(dev)
            dev.next_hello = now + self.rng.uniform(0.5, 1.0) * self.config.heartbeat_seconds

        await asyncio.gather(*(hello(d) for d in self.devices))

    # --- what tests, the CLI and the benchmark look at ------------------------------------------------

    @property
    def connected_seconds(self) -> float | None:
        return None if self._connected is None else self._connected - self._started

    def device(self, device_id: str) -> SimDevice:
        return self._by_id[device_id]

    def state_of(self, dev: SimDevice) -> str:
        """One word per device: offline, crashed, active, failed, installing, or idle (nothing desired)."""
        if dev.presence is not Presence.ONLINE:
            return dev.presence.value
        if dev.task is not None and not dev.task.done():
            return "installing"
        if dev.last_step == "active" and dev.settled_revision == dev.revision:
            return "active"
        if dev.last_step == "failed":
            return "failed"
        return "idle" if dev.revision == 0 else "installing"

    def converged_on(self, digest: str, revisions: dict[str, int] | None = None) -> list[SimDevice]:
        """Devices whose `active` status for `digest` (at the given revision, if any) was acknowledged."""
        return [
            d
            for d in self.devices
            if d.last_step == "active"
            and d.active_digest == digest
            and d.settled_revision == d.revision
            and (revisions is None or d.settled_revision == revisions.get(d.device_id))
        ]

    async def wait_until(self, predicate: Callable[[], bool], *, timeout: float, poll: float = 0.1) -> bool:
        """Poll `predicate` until it holds (True) or `timeout` seconds pass (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(poll)
        return True

    def report(self) -> FleetReport:
        loop = asyncio.get_running_loop()
        self._sample_rss()
        elapsed = loop.time() - self._started
        n = len(self.devices)
        states = Counter(self.state_of(d) for d in self.devices)
        per_class: dict[str, list[SimDevice]] = {}
        for dev in self.devices:
            per_class.setdefault(dev.device_class.name, []).append(dev)
        classes = [
            ClassSummary(
                device_class=name,
                devices=len(devs),
                speed_factor=devs[0].device_class.speed_factor,
                states=dict(Counter(self.state_of(d) for d in devs)),
                convergence=Convergence.of(self._convergence_seconds(devs)),
            )
            for name, devs in per_class.items()
        ]
        cpu = resources.cpu_seconds() - self._cpu0
        worker_pid = self.worker.pid
        worker_cpu = resources.process_cpu_seconds(worker_pid) if worker_pid else 0.0
        cache = self.cache
        published = sum(self.messages.values())
        return FleetReport(
            devices=n,
            connections=len(self.connections),
            elapsed_s=elapsed,
            connected_s=self.connected_seconds,
            mix=dict(Counter(d.device_class.name for d in self.devices)),
            faults=dict(Counter(str(d.fault) for d in self.devices if d.fault is not None)),
            steps={step: self.steps[step] for step in get_args(InstallStep) if self.steps[step]},
            states=dict(states),
            classes=classes,
            convergence=Convergence.of(self._convergence_seconds(self.devices)),
            messages={
                **dict(self.messages),
                "publish_retries": sum(c.publish_retries for c in self.connections),
                "publish_lost": sum(c.publish_lost for c in self.connections),
            },
            messages_per_second=published / elapsed if elapsed > 0 else 0.0,
            events=dict(self.events),
            shared=SharedWork(
                real_downloads=cache.real_downloads if cache else 0,
                real_download_bytes=cache.real_bytes if cache else 0,
                download_url_requests=sum(c.registry_requests for c in self.connections),
                download_urls_shared=self.config.share_download_urls,
                measurements=self.worker.measured,
                real_inference_devices=sum(1 for d in self.devices if d.real_inference),
                real_inference_requests=self.worker.real_requests,
                corrupted_copies_verified=cache.corrupted_copies if cache else 0,
                settings_digests=self.config_digests.computed,
            ),
            resources=Resources(
                cpu_seconds=cpu,
                worker_cpu_seconds=worker_cpu,
                cpu_seconds_per_device=(cpu + worker_cpu) / n,
                rss_baseline_mb=self._rss0,
                rss_peak_mb=self._rss_peak,
                rss_per_device_kb=max(0.0, self._rss_peak - self._rss0) * 1024 / n,
                worker_rss_mb=resources.rss_mb(worker_pid) if worker_pid else 0.0,
            ),
        )

    @staticmethod
    def _convergence_seconds(devices: list[SimDevice]) -> list[float]:
        return [
            d.converged_at - d.changed_at
            for d in devices
            if d.converged_at is not None and d.changed_at is not None and d.last_step == "active"
        ]

    # --- desired state -------------------------------------------------------------------------------

    async def _follow_desired(self) -> None:
        """One watcher on every key; each entry goes to the device it names (others are ignored)."""
        kv = await self.connections[0].js.key_value(topology.KV_DESIRED)
        watcher = await kv.watchall()
        async for entry in watcher:
            if entry is None:
                continue  # the end of the initial values
            dev = self._by_id.get(entry.key)
            if dev is None or entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                continue
            try:
                desired = Desired.from_entry(entry.value, revision=entry.revision, digest_of=self.config_digests)
            except ValidationError:
                self.events["invalid_desired_state"] += 1
                continue
            if dev.presence is not Presence.ONLINE:
                self.events["desired_missed_while_away"] += 1
                continue
            self._converge(dev, desired)

    def _converge(self, dev: SimDevice, desired: Desired) -> None:
        """Start acting on `desired` unless the device is already on it; a newer revision wins."""
        if desired.revision <= dev.revision:
            return
        if dev.task is not None and not dev.task.done():
            dev.task.cancel()
        dev.revision = desired.revision
        dev.changed_at = asyncio.get_running_loop().time()
        dev.converged_at = None
        dev.task = asyncio.create_task(self._run_install(dev, desired))

    async def _run_install(self, dev: SimDevice, desired: Desired) -> None:
        started = time.time_ns()
        try:
            final = await dev.converge(desired, self._envs[dev.connection])
        except DeviceCrashed as crash:
            self._traced(dev, desired, started, "crashed", str(crash))
            self._crash(dev, crash)
        except asyncio.CancelledError:
            self._traced(dev, desired, started, "cancelled", None)
            raise
        except Exception as exc:
            # A bug in the simulator, not a device failure: count it so the report shows it.
            self._traced(dev, desired, started, "error", f"{type(exc).__name__}: {exc}")
            log.exception("simulated install crashed unexpectedly", extra={"device": dev.device_id})
            self.events["simulator_errors"] += 1
        else:
            self._traced(dev, desired, started, final.step, final.reason)

    def _traced(self, dev: SimDevice, desired: Desired, started_ns: int, outcome: str, reason: str | None) -> None:
        """The install's `device.install` span, recorded once it is over (a no-op with tracing off)."""
        record_install_span(
            self.tracer,
            desired,
            device_id=dev.device_id,
            device_class=dev.device_class.name,
            started_ns=started_ns,
            outcome=outcome,
            reason=reason,
        )

    async def _catch_up(self, dev: SimDevice) -> None:
        """Back online or restarted: hello, then read the desired key (changes were missed meanwhile)."""
        await self._hello(dev)
        try:
            desired = await self.connections[dev.connection].desired(dev.device_id)
        except ValidationError:
            self.events["invalid_desired_state"] += 1
            return
        if desired is not None:
            self._converge(dev, desired)  # a no-op if the watcher delivered it first

    # --- faults --------------------------------------------------------------------------------------

    def _go_offline(self, dev: SimDevice) -> None:
        dev.presence = Presence.OFFLINE
        self.events["went_offline"] += 1
        if dev.task is not None and not dev.task.done():
            dev.task.cancel()  # the link is gone: the download breaks; redone on return
            self.events["install_interrupted_by_offline"] += 1
        dev.revision = dev.settled_revision
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(self.config.offline_for, self._come_back, dev))

    def _come_back(self, dev: SimDevice) -> None:
        dev.presence = Presence.ONLINE
        dev.window_start = None
        self.events["came_back"] += 1
        self._spawn(self._catch_up(dev))

    def _crash(self, dev: SimDevice, crash: DeviceCrashed) -> None:
        """The process died: whatever the install held in memory is gone; the slots are as they were."""
        dev.presence = Presence.CRASHED
        dev.revision = dev.settled_revision
        dev.task = None
        self.events["crashed"] += 1
        self.events[f"crashed_after_{crash.step}"] += 1
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(self.config.crash_restart, self._restart, dev))

    def _restart(self, dev: SimDevice) -> None:
        dev.presence = Presence.ONLINE
        dev.window_start = None
        self.events["restarted"] += 1
        self._spawn(self._catch_up(dev))

    # --- hello and drawn telemetry -------------------------------------------------------------------

    async def _hello(self, dev: SimDevice) -> None:
        cls = dev.device_class
        hello = DeviceHello(
            device_id=dev.device_id,
            device_class=cls.name,
            arch=cls.arch,
            ram_mb=cls.ram_mb,
            cpu_count=cls.cpu_count,
            accelerators=list(cls.accelerators),
            onnxruntime_version=self._ort_version,
            execution_providers=["CPUExecutionProvider"],
            labels=self._labels,
            agent_version=AGENT_VERSION,
            active_digest=dev.active_digest,
            config_digest=dev.config_digest,
        )
        conn = self.connections[dev.connection]
        if await conn.publish(
            subjects.device_hello(dev.device_id), hello, msg_id=new_id(), source=f"device:{dev.device_id}"
        ):
            self.messages["hello"] += 1

    async def _tick(self) -> None:
        """Heartbeats and drawn telemetry windows for every device that is due, twice a second."""
        loop = asyncio.get_running_loop()
        window = self.config.window_seconds
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = loop.time()
            self._sample_rss()
            for dev in self.devices:
                if dev.presence is not Presence.ONLINE:
                    continue
                if now >= dev.next_hello:
                    dev.next_hello = now + self.config.heartbeat_seconds
                    self._spawn(self._hello(dev))
                if dev.real_inference or dev.active is None:
                    continue
                if dev.window_start is None:
                    dev.window_start = datetime.now(UTC)
                    first = min(window, FIRST_WINDOW_SECONDS) if dev.switched else window  # the agent's rule
                    dev.switched = False
                    dev.next_window = now + first * self.rng.uniform(0.5, 1.0)  # spread the fleet's windows
                elif now >= dev.next_window:
                    self._draw_and_publish(dev)
                    dev.next_window = now + window

    def inputs_shifted(self, dev: SimDevice) -> bool:
        """Whether `dev` sees shifted inputs now."""
        return dev.inputs_shift and self._shift_at is not None and asyncio.get_running_loop().time() >= self._shift_at

    def _draw_and_publish(self, dev: SimDevice) -> None:
        serving, start = dev.serving, dev.window_start  # the window opened after the last switch or keep
        end = datetime.now(UTC)
        dev.window_start = end
        if serving is None or start is None:
            return
        digest, rollout_id, wave = serving
        shifted = self.inputs_shifted(dev)
        measurement = self.worker.shifted_measurement(digest) if shifted else self.worker.measurement(digest)
        if measurement is None or measurement.failure:
            if shifted and measurement is None:
                self._measure_shifted(digest)
            return  # not measured yet: no window rather than an invented one
        shadow = None
        previous = dev.previous_digest
        if dev.shadow and previous is not None:
            agreed = self.worker.agreement_ready(digest, previous)
            if agreed is None:
                self._spawn(self._measure_agreement(digest, previous))
            else:
                shadow = (previous, agreed)
        served = _served_on(dev, digest)
        window = draw_window(
            measurement,
            device_id=dev.device_id,
            device_class=dev.device_class.name,
            speed_factor=dev.device_class.speed_factor,
            start=start,
            end=end,
            rate=self.config.request_rate,
            rng=self._np_rng,
            ram_mb=model_ram_mb(self.artifacts[digest].size_bytes),
            reference_served=served,
            rollout_id=rollout_id,
            wave=wave,
            shadow=shadow,
        )
        if served < REFERENCE_REQUESTS:
            dev.reference_served[digest] = min(REFERENCE_REQUESTS, served + window.request_count - window.error_count)
        if shifted:
            self.events["windows_on_shifted_inputs"] += 1
        self._spawn(self._publish_window(dev, window))

    def _measure_shifted(self, digest: str) -> None:
        """Start measuring `digest` on shifted inputs, unless that is under way or done."""
        if digest in self._shifting or self.worker.shifted_measurement(digest) is not None:
            return
        self._shifting.add(digest)

        async def measure() -> None:
            try:
                await self.worker.measure_shifted(digest, str(self.artifacts[digest].path))
            finally:
                self._shifting.discard(digest)

        self._spawn(measure())

    async def _measure_agreement(self, new: str, previous: str) -> None:
        a, b = self.artifacts[new], self.artifacts[previous]
        await self.worker.agreement((new, str(a.path)), (previous, str(b.path)))

    async def _publish_window(self, dev: SimDevice, window: TelemetryWindow | None) -> None:
        if window is None:
            return
        conn = self.connections[dev.connection]
        if await conn.publish(
            subjects.telemetry(dev.device_id),
            window,
            msg_id=telemetry_message_id(window),
            source=f"device:{dev.device_id}",
        ):
            self.messages["telemetry"] += 1

    # --- real inference ------------------------------------------------------------------------------

    async def _real_inference(self, dev: SimDevice) -> None:
        """A device that runs every request for real (in the worker) and records its own windows.

        A window is of one digest served for one desired state: it closes when the digest or its
        labels change (a switch, or a keep for another rollout, wave or by hand), and a new one takes
        both from `dev.serving` at one moment, after the previous window's publish has returned (the
        install may have switched while it was in flight).
        """
        loop = asyncio.get_running_loop()
        rng = np.random.default_rng([self.config.seed, dev.index])
        window: _RealWindow | None = None
        references: dict[str, ReferenceCentroid] = {}  # the agent's rule: per digest, across windows
        request = 0
        while True:
            await asyncio.sleep(float(rng.exponential(1 / self.config.request_rate)))
            online = dev.presence is Presence.ONLINE
            serving = dev.serving if online else None
            if window is not None and (window.serving != serving or loop.time() >= window.due):
                closing, window = window, None
                if online:  # the agent closes the old model's window when it switches; offline, it is lost
                    await self._publish_window(dev, closing.close(dev, self.artifacts))
                    online = dev.presence is Presence.ONLINE  # read again: the publish was a suspension
                    serving = dev.serving if online else None
            if serving is None or serving[0] not in self.artifacts:
                continue
            digest = serving[0]
            if window is None:
                held = set(dev.slots.values())
                references = {d: r for d, r in references.items() if d in held}
                recorder = WindowRecorder(
                    digest=digest,
                    started=datetime.now(UTC),
                    rollout_id=serving[1],
                    wave=serving[2],
                    reference=references.setdefault(digest, ReferenceCentroid()),
                )
                window = _RealWindow(recorder=recorder, due=loop.time() + self.config.window_seconds)
            previous = dev.previous_digest
            shadow = None
            if dev.shadow and previous is not None and previous in self.artifacts:
                shadow = (previous, str(self.artifacts[previous].path))
            request += 1
            model = (digest, str(self.artifacts[digest].path))
            result = await self.worker.infer(
                model, shadow, seed=self.config.seed + dev.index, index=request, shifted=self.inputs_shifted(dev)
            )
            latency = result.latency_ms * dev.device_class.speed_factor
            window.busy_ms += latency
            window.recorder.record(latency, output=result.output, error=result.error is not None)
            if shadow is not None and result.agreed is not None:
                window.recorder.record_shadow(previous_digest=shadow[0], agreed=result.agreed)

    # --- plumbing ------------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _sample_rss(self) -> None:
        self._rss_peak = max(self._rss_peak, resources.rss_mb())


class ConfigDigests:
    """`config_digest` of the settings the fleet is told to serve, hashed once per distinct settings:
    a rollout gives ten thousand devices the same ones, each parsed from its own desired state.

    Keyed by the settings' `marshal` bytes (format 2: no back-references, so equal values in the
    same order give equal bytes, while 1, 1.0 and true, equal in Python, differ as in JSON), which
    cost about a seventh of the canonical JSON and its sha256. The last `size` distinct ones are kept.
    """

    __slots__ = ("_known", "_size", "computed")

    def __init__(self, size: int = 64) -> None:
        self._known: dict[bytes, str] = {}
        self._size = size
        self.computed = 0

    def __call__(self, config: dict[str, Any]) -> str:
        key = marshal.dumps(config, 2)
        digest = self._known.get(key)
        if digest is None:
            if len(self._known) >= self._size:
                del self._known[next(iter(self._known))]
            digest = self._known[key] = config_digest(config)
            self.computed += 1
        return digest


def _served_on(dev: SimDevice, digest: str) -> int:
    """Requests `dev` has served on `digest` towards its reference (counts of digests no slot holds
    are dropped, as the agent drops their centroids)."""
    held = set(dev.slots.values())
    for stale in [d for d in dev.reference_served if d not in held]:
        del dev.reference_served[stale]
    return dev.reference_served.get(digest, 0)


@dataclass
class _RealWindow:
    """The open window of a real-inference device."""

    recorder: WindowRecorder
    due: float
    busy_ms: float = 0.0

    @property
    def serving(self) -> tuple[str, str | None, int | None]:
        """What the window is of: its digest and the labels of the desired state it serves for."""
        return (self.recorder.digest, self.recorder.rollout_id, self.recorder.wave)

    def close(self, dev: SimDevice, artifacts: dict[str, CachedArtifact]) -> TelemetryWindow | None:
        end = datetime.now(UTC)
        if end <= self.recorder.started:
            return None
        seconds = (end - self.recorder.started).total_seconds()
        return self.recorder.close(
            device_id=dev.device_id,
            device_class=dev.device_class.name,
            ended=end,
            cpu_percent=busy_percent(self.busy_ms, seconds),
            ram_mb=model_ram_mb(artifacts[self.recorder.digest].size_bytes),
        )


class _Env:
    """`device.InstallEnv` of the devices on one connection: real checks behind simulated time.

    One per connection, not per install: it holds nothing of a device's.
    """

    def __init__(self, sim: FleetSimulator, conn: FleetConnection) -> None:
        self._sim = sim
        self._conn = conn
        self.policy = sim.policy

    async def publish(self, device: SimDevice, status: DeviceStatus) -> None:
        published = await self._conn.publish(
            subjects.device_status(device.device_id),
            status,
            msg_id=status_message_id(status),  # the agent's id rule: a retried publish is one message
            source=f"device:{device.device_id}",
        )
        if published:
            self._sim.steps[status.step] += 1
            self._sim.messages["status"] += 1

    async def download_url(self, device: SimDevice, digest: str) -> DownloadUrl:
        return await self._conn.download_url(digest, device_id=device.device_id)

    async def fetch(self, url: DownloadUrl) -> CachedArtifact:
        cache = self._sim.cache
        if cache is None:
            raise RuntimeError("the simulator is not started")
        artifact = await cache.fetch(url)
        self._sim.artifacts.setdefault(artifact.digest, artifact)
        return artifact

    async def verify(self, device: SimDevice, artifact: CachedArtifact, desired: DesiredState) -> None:
        cache = self._sim.cache
        if cache is None:
            raise RuntimeError("the simulator is not started")
        await cache.verify(
            artifact, signature=desired.signature, corrupt=device.fault is Fault.CORRUPT, rng=self._sim.rng
        )

    async def load(self, device: SimDevice, digest: str) -> LoadTiming:
        artifact = self._sim.artifacts[digest]
        measurement = await self._sim.worker.measure(digest, str(artifact.path))
        if measurement.failure:
            raise LoadFailed(measurement.failure)
        if self._sim.config.input_shift_after is not None:
            self._sim._measure_shifted(digest)  # so it is ready when the inputs shift
        return LoadTiming(load_ms=measurement.load_ms, smoke_ms=measurement.smoke_ms)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
