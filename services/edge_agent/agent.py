"""The agent: follow the desired state, install safely, serve inferences, report telemetry.

Three loops run side by side: a heartbeat (hello with the active digest), the desired-state
follower, and the telemetry window. Installing is the protocol's state machine (`install.py`, the
same code the fleet simulator runs) over this host's seams (`local_install.py`): each step is
reported on the status subject; any failure stops the install with a reason and leaves the
previous model serving, because the active slot only changes in the last step. A newer desired
revision cancels an install in progress; an agent restarted mid-install resumes its partial download.
Each install is a `device.install` span continuing the trace in its desired state's `traceparent`
(`install_trace.py`), with a child span per step (`local_install.py`). The desired state's settings
serve with its model (`app_config`, what `GET /v1/config` returns) and are named by digest in every
hello and status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from opentelemetry import trace

from services.edge_agent.capabilities import Capabilities
from services.edge_agent.desired import AppConfig, Desired
from services.edge_agent.errors import LoadFailed, NotReady
from services.edge_agent.install import RetryPolicy, converge
from services.edge_agent.install_trace import end_install_span, start_install_span
from services.edge_agent.local_install import LocalInstall
from services.edge_agent.ports import Link
from services.edge_agent.runtime import LoadedModel, ModelRuntime
from services.edge_agent.slots import SlotStore
from services.edge_agent.telemetry import (
    FIRST_WINDOW_SECONDS,
    ReferenceCentroid,
    WindowRecorder,
    embeddings_agree,
)
from shared import bus
from shared.messages.device import DeviceHello

AGENT_VERSION = "0.1.0"
log = logging.getLogger("slmops.agent")


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """A device's settings. `registry_key_pem` is the registry's public key pinned at enrolment
    (`slmops device enroll` writes it next to the credentials): artifacts are verified against it,
    never against a key something on the bus hands out."""

    device_id: str
    device_class: str
    registry_key_pem: str
    labels: dict[str, str] = field(default_factory=dict)
    state_dir: Path
    heartbeat_seconds: float = 30.0
    telemetry_seconds: float = 10.0
    first_window_seconds: float = FIRST_WINDOW_SECONDS  # a new model's first window (see telemetry.py)
    download_attempts: int = 4
    download_backoff: float = 0.5
    download_rate_limit_bps: int | None = None
    threads: int = 1


def hello(
    config: AgentConfig, capabilities: Capabilities, *, active_digest: str | None, config_digest: str | None = None
) -> DeviceHello:
    """The hello (and heartbeat) this device sends.

    Raises:
        pydantic.ValidationError: the id, class or labels are not what the protocol allows; the CLI
            builds one before connecting, so a bad option fails with the field's reason at once.
    """
    c = capabilities
    return DeviceHello(
        device_id=config.device_id,
        device_class=config.device_class,
        arch=c.arch,
        ram_mb=c.ram_mb,
        cpu_count=c.cpu_count,
        accelerators=c.accelerators,
        onnxruntime_version=c.onnxruntime_version,
        execution_providers=c.execution_providers,
        labels=config.labels,
        agent_version=AGENT_VERSION,
        active_digest=active_digest,
        config_digest=config_digest,
    )


class Agent:
    """One device: serves the active model, follows its desired state, reports telemetry.

    Args:
        config: who the device is and its timings.
        link: the bus (`link.DeviceLink`), or `adapters.memory.MemoryLink` in tests.
        capabilities: what this host offers (sent in every hello).
        tracer: where install spans go (default: the process's tracer provider, which `slmops
            agent` installs; a no-op until one is).
    """

    def __init__(
        self, config: AgentConfig, *, link: Link, capabilities: Capabilities, tracer: trace.Tracer | None = None
    ) -> None:
        self.config = config
        self.link = link
        self.capabilities = capabilities
        self.store = SlotStore(config.state_dir / config.device_id)
        self.runtime = ModelRuntime()
        self._recorder_lock = threading.Lock()
        self._recorder: WindowRecorder | None = None
        # Per digest, for as long as a slot holds it: a reference outlives windows (and a rollback).
        self._references: dict[str, ReferenceCentroid] = {}
        self._policy = RetryPolicy(attempts=config.download_attempts, backoff=config.download_backoff)
        self._tracer = tracer or trace.get_tracer("slmops.agent")
        self._installer = LocalInstall(
            link=link,
            store=self.store,
            runtime=self.runtime,
            serve=self._serve,
            relabel=self._relabel,
            policy=self._policy,
            threads=config.threads,
            rate_limit_bps=config.download_rate_limit_bps,
            registry_key_pem=config.registry_key_pem,
            tracer=self._tracer,
        )
        self._install: asyncio.Task[None] | None = None
        self._first_window: asyncio.Task[None] | None = None
        self._install_revision = 0
        self._cpu = _CpuMeter()

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until cancelled."""
        await asyncio.to_thread(self._load_active)
        await self._hello()
        tasks = [
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._follow_desired(), name="desired"),
            asyncio.create_task(self._telemetry_loop(), name="telemetry"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in [*tasks, *(t for t in (self._install, self._first_window) if t is not None)]:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            with contextlib.suppress(Exception):
                await self._flush_window()

    @property
    def active_digest(self) -> str | None:
        content = self.store.load().active_content
        return content.digest if content else None

    @property
    def app_config(self) -> AppConfig:
        """The application settings serving with the active model (`values` None: none)."""
        return self.runtime.app_config()

    # --- inference (thread-safe; called from the HTTP server's threads or the application) -----

    def infer(self, inputs: dict[str, np.ndarray]) -> tuple[str, list[np.ndarray]]:
        """Run the serving model; in shadow mode also the previous one, for agreement only."""
        active, shadow = self.runtime.current()
        if active is None:
            raise NotReady("no model is installed yet")
        started = time.perf_counter()
        try:
            outputs = active.run(inputs)
        except Exception:
            self._record(active.digest, (time.perf_counter() - started) * 1000, None, error=True)
            raise
        self._record(active.digest, (time.perf_counter() - started) * 1000, outputs[0])
        if shadow is not None:
            with contextlib.suppress(Exception):  # the shadow model must never hurt the real request
                agreed = embeddings_agree(outputs[0], shadow.run(inputs)[0])
                with self._recorder_lock:
                    if self._recorder is not None and self._recorder.digest == active.digest:
                        self._recorder.record_shadow(previous_digest=shadow.digest, agreed=agreed)
        return active.digest, outputs

    def _record(self, digest: str, latency_ms: float, output: np.ndarray | None, *, error: bool = False) -> None:
        with self._recorder_lock:
            if self._recorder is None or self._recorder.digest != digest:
                return
            self._recorder.record(latency_ms, output=output, error=error)

    # --- loops ----------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_seconds)
            with contextlib.suppress(bus.BusError):
                await self._hello()

    async def _hello(self) -> None:
        await self.link.hello(
            hello(
                self.config,
                self.capabilities,
                active_digest=self.active_digest,
                config_digest=self.runtime.app_config().digest,
            )
        )

    async def _follow_desired(self) -> None:
        async for desired in self.link.watch_desired():
            if desired is None or desired.revision <= self._install_revision:
                continue
            if self._install is not None and not self._install.done():
                self._install.cancel()  # a newer desired state wins; the partial download is kept
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._install
            self._install_revision = desired.revision
            self._install = asyncio.create_task(self._converge(desired), name=f"install-{desired.revision}")

    async def _converge(self, desired: Desired) -> None:
        """Install `desired` inside its `device.install` span (current, so the steps' spans are its children)."""
        span = start_install_span(
            self._tracer, desired, device_id=self.config.device_id, device_class=self.config.device_class
        )
        with trace.use_span(span, record_exception=False, set_status_on_exception=False):
            try:
                final = await converge(desired, self._installer, policy=self._policy)
            except asyncio.CancelledError:  # a newer revision won
                end_install_span(span, "cancelled")
                raise
            except Exception as exc:  # a bug: the task ends with it, the span says so
                span.record_exception(exc)
                end_install_span(span, "error", reason=f"{type(exc).__name__}: {exc}")
                raise
        end_install_span(span, final.step, reason=final.reason)

    async def _telemetry_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.telemetry_seconds)
            with contextlib.suppress(bus.BusError):
                await self._flush_window()

    async def _flush_window(self) -> None:
        active, _ = self.runtime.current()
        now = datetime.now(UTC)
        opening = self._open_window(active.digest, now) if active else None
        with self._recorder_lock:
            closing, self._recorder = self._recorder, opening
        if closing is None or now <= closing.started:
            return
        window = closing.close(
            device_id=self.config.device_id,
            device_class=self.config.device_class,
            ended=now,
            cpu_percent=self._cpu.percent(),
            ram_mb=_rss_mb(),
        )
        await self.link.telemetry(window)

    def _open_window(self, digest: str, started: datetime) -> WindowRecorder:
        """A recorder for `digest`, naming the rollout and wave its slot was installed or kept for,
        with the digest's reference centroid (references of digests no slot holds are dropped)."""
        slots = self.store.load().slots
        content = next((c for c in slots.values() if c is not None and c.digest == digest), None)
        held = {c.digest for c in slots.values() if c is not None} | {digest}
        self._references = {d: r for d, r in self._references.items() if d in held}
        reference = self._references.setdefault(digest, ReferenceCentroid())
        return WindowRecorder(
            digest=digest,
            started=started,
            rollout_id=content.rollout_id if content else None,
            wave=content.wave if content else None,
            reference=reference,
        )

    # --- installing -----------------------------------------------------------------------------

    async def _serve(self, loaded: LoadedModel, shadow: LoadedModel | None, config: AppConfig) -> None:
        """After a durable switch: close the old model's window, swap the sessions (and the settings
        with them), say hello."""
        with contextlib.suppress(bus.BusError):  # the switch is durable: a lost window must not undo it
            await self._flush_window()  # close the old model's window before the new one serves
        self.runtime.swap(loaded, shadow=shadow, config=config)
        opening = self._open_window(loaded.digest, datetime.now(UTC))
        with self._recorder_lock:
            self._recorder = opening
        if self._first_window is not None:
            self._first_window.cancel()
        self._first_window = asyncio.create_task(self._close_first_window(), name="first-window")
        with contextlib.suppress(bus.BusError):
            await self._hello()

    async def _close_first_window(self) -> None:
        """The new model's first window is short (`first_window_seconds`): the rollout hears soon."""
        await asyncio.sleep(min(self.config.telemetry_seconds, self.config.first_window_seconds))
        with contextlib.suppress(bus.BusError):
            await self._flush_window()

    async def _relabel(self) -> None:
        """After a keep for another desired state: close the window opened under the old labels;
        the next one names the new ones (a window's labels are those its slot had when it opened)."""
        with contextlib.suppress(bus.BusError):  # the provenance is durable: a lost window must not undo it
            await self._flush_window()

    def _load_active(self) -> None:
        state = self.store.load()
        content = state.active_content
        if content is None or state.active is None:
            return
        # The active slot's settings, even if its model fails to load below: they are what the
        # device reports, and the next install or keep replaces them.
        self.runtime.configure(self.store.config(state.active))
        try:
            loaded = LoadedModel(
                self.store.model_path(state.active), digest=content.digest, threads=self.config.threads
            )
        except LoadFailed as exc:
            log.error("the active model does not load", extra={"digest": content.digest, "reason": str(exc)})
            return
        self.runtime.swap(loaded, shadow=None)
        opening = self._open_window(content.digest, datetime.now(UTC))
        with self._recorder_lock:
            self._recorder = opening


class _CpuMeter:
    """System-wide CPU use since the previous call, from /proc/stat (process CPU elsewhere)."""

    def __init__(self) -> None:
        self._last = self._read()

    def percent(self) -> float:
        now = self._read()
        (busy0, total0), (busy1, total1) = self._last, now
        self._last = now
        return 100.0 * (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0

    @staticmethod
    def _read() -> tuple[float, float]:
        try:
            fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
            return sum(fields) - idle, sum(fields)
        except (OSError, ValueError, IndexError):
            t = os.times()
            return t.user + t.system, time.monotonic() * (os.cpu_count() or 1)


def _rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1024**2
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
