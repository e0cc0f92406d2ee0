"""The agent: follow the desired state, install safely, serve inferences, report telemetry.

Three loops run side by side: a heartbeat (hello with the active digest), the desired-state
follower, and the telemetry window. Installing is a sequence of steps, each reported on the status
subject; any failure stops the install with a reason and leaves the previous model serving,
because the active slot only changes in the last step (see `slots.py`). A newer desired revision
cancels an install in progress; an agent restarted mid-install resumes its partial download.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from services.edge_agent import slots as slot_store
from services.edge_agent.capabilities import Capabilities
from services.edge_agent.download import download
from services.edge_agent.errors import AgentError, LoadFailed, NotReady, VerificationFailed
from services.edge_agent.link import Desired, DeviceLink
from services.edge_agent.runtime import LoadedModel, ModelRuntime
from services.edge_agent.slots import LocalState, Slot, SlotStore
from services.edge_agent.telemetry import WindowRecorder, embeddings_agree
from services.edge_agent.verify import verify_artifact
from shared import bus
from shared.digests import sha256_file
from shared.errors import SlmopsError
from shared.messages.device import DeviceHello, DeviceStatus, InstallStep, ProgressBytes

AGENT_VERSION = "0.1.0"
log = logging.getLogger("slmops.agent")


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    device_id: str
    device_class: str
    labels: dict[str, str] = field(default_factory=dict)
    state_dir: Path
    heartbeat_seconds: float = 30.0
    telemetry_seconds: float = 10.0
    download_attempts: int = 4
    download_rate_limit_bps: int | None = None
    threads: int = 1


class Agent:
    def __init__(self, config: AgentConfig, *, link: DeviceLink, capabilities: Capabilities) -> None:
        self.config = config
        self.link = link
        self.capabilities = capabilities
        self.store = SlotStore(config.state_dir / config.device_id)
        self.runtime = ModelRuntime()
        self._recorder_lock = threading.Lock()
        self._recorder: WindowRecorder | None = None
        self._public_key: str | None = None
        self._install: asyncio.Task[None] | None = None
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
            for t in [*tasks, *([self._install] if self._install else [])]:
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
        c = self.capabilities
        await self.link.hello(
            DeviceHello(
                device_id=self.config.device_id,
                device_class=self.config.device_class,
                arch=c.arch,
                ram_mb=c.ram_mb,
                cpu_count=c.cpu_count,
                accelerators=c.accelerators,
                onnxruntime_version=c.onnxruntime_version,
                execution_providers=c.execution_providers,
                labels=self.config.labels,
                agent_version=AGENT_VERSION,
                active_digest=self.active_digest,
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

    async def _telemetry_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.telemetry_seconds)
            with contextlib.suppress(bus.BusError):
                await self._flush_window()

    async def _flush_window(self) -> None:
        active, _ = self.runtime.current()
        now = datetime.now(UTC)
        with self._recorder_lock:
            closing = self._recorder
            self._recorder = WindowRecorder(digest=active.digest, started=now) if active else None
        if closing is None or now <= closing.started:
            return
        window = closing.close(
            device_id=self.config.device_id, ended=now, cpu_percent=self._cpu.percent(), ram_mb=_rss_mb()
        )
        await self.link.telemetry(window)

    # --- converging on a desired state -------------------------------------------------------

    async def _converge(self, desired: Desired) -> None:
        d = desired.state
        state = await asyncio.to_thread(self.store.load)
        report = _Reporter(self, desired)
        try:
            if state.active_content and state.active_content.digest == d.digest:
                await report("active", slot=state.active)
                return
            if (slot := state.slot_with(d.digest)) is not None:
                await self._switch(state, slot, desired)  # back to the kept slot: no download
                await report("active", slot=slot)
                return
            await self._install_new(state, desired, report)
        except asyncio.CancelledError:
            raise
        except AgentError as exc:
            log.warning("install failed", extra={"digest": d.digest, "reason": str(exc)})
            await report("failed", reason=str(exc))
        except bus.BusError as exc:
            await report("failed", reason=f"cannot reach the registry: {exc}")
        except SlmopsError as exc:  # the registry refused (no such digest, say)
            await report("failed", reason=f"the registry refused: {exc}")

    async def _install_new(self, state: LocalState, desired: Desired, report: _Reporter) -> None:
        d = desired.state
        await report("received")
        public_key = await self._registry_public_key()
        part = self.store.partial_download(d.digest)
        loop = asyncio.get_running_loop()

        def publish_progress(done: int, total: int) -> None:
            if report.should_report_progress(done, total):
                asyncio.run_coroutine_threadsafe(
                    report("downloading", progress=ProgressBytes(done=min(done, total), total=total)), loop
                ).result(timeout=30)

        def get_url() -> str:
            return asyncio.run_coroutine_threadsafe(self.link.download_url(d.digest), loop).result(timeout=30).url

        def on_attempt(attempt: int) -> None:
            report.attempt = attempt

        await report(
            "downloading", progress=ProgressBytes(done=part.stat().st_size if part.exists() else 0, total=d.size_bytes)
        )
        await asyncio.to_thread(
            download,
            get_url,
            part,
            size=d.size_bytes,
            attempts=self.config.download_attempts,
            rate_limit_bps=self.config.download_rate_limit_bps,
            on_progress=publish_progress,
            on_attempt=on_attempt,
        )
        await report("downloaded")
        await report("verifying")
        try:
            await asyncio.to_thread(
                verify_artifact, part, digest=d.digest, signature=d.signature, public_key_pem=public_key
            )
        except VerificationFailed:
            part.unlink(missing_ok=True)  # never keep bytes that failed verification
            raise
        await report("verified")
        target = state.inactive
        # The slot is about to be overwritten: record that first, so a crash never leaves the state
        # naming content the slot no longer holds.
        cleared = LocalState(active=state.active, slots={**state.slots, target: None})
        await asyncio.to_thread(self.store.commit, cleared)
        path = await asyncio.to_thread(self.store.place, target, part)
        await report("loading", slot=target)
        loaded = await asyncio.to_thread(LoadedModel, path, digest=d.digest, threads=self.config.threads)
        await report("smoke_testing", slot=target)
        smoke = await self._smoke_inputs(desired, public_key)
        await asyncio.to_thread(loaded.smoke, smoke)
        content = slot_store.installed(d.digest, model=d.model, version=d.version, variant=d.variant)
        await self._activate(LocalState(active=target, slots={**cleared.slots, target: content}), loaded, desired)
        await report("active", slot=target)

    async def _switch(self, state: LocalState, slot: Slot, desired: Desired) -> None:
        loaded = await asyncio.to_thread(
            LoadedModel, self.store.model_path(slot), digest=desired.state.digest, threads=self.config.threads
        )
        await asyncio.to_thread(loaded.smoke, None)
        await self._activate(replace(state, active=slot), loaded, desired)

    async def _activate(self, new_state: LocalState, loaded: LoadedModel, desired: Desired) -> None:
        """The one step that changes what serves: commit the state, then swap the session."""
        previous, _ = self.runtime.current()
        await asyncio.to_thread(self.store.commit, new_state)
        await self._flush_window()  # close the old model's window before the new one serves
        self.runtime.swap(loaded, shadow=previous if desired.state.shadow and previous else None)
        with self._recorder_lock:
            self._recorder = WindowRecorder(digest=loaded.digest, started=datetime.now(UTC))
        with contextlib.suppress(bus.BusError):
            await self._hello()

    async def _smoke_inputs(self, desired: Desired, public_key: str) -> dict[str, np.ndarray] | None:
        smoke = desired.state.smoke_input
        if smoke is None:
            return None
        target = self.store.downloads / f"{smoke.digest}.npz"
        url = (await self.link.download_url(smoke.digest)).url
        await asyncio.to_thread(
            download, lambda: url, target, size=smoke.size_bytes, attempts=self.config.download_attempts
        )
        digest, _ = await asyncio.to_thread(sha256_file, target)
        if digest != smoke.digest:
            target.unlink(missing_ok=True)
            raise VerificationFailed(f"smoke input sha256 mismatch: expected {smoke.digest}, got {digest}")
        with np.load(target, allow_pickle=False) as npz:
            return {name: npz[name][:1] for name in npz.files}

    async def _registry_public_key(self) -> str:
        if self._public_key is None:
            self._public_key = (await self.link.public_key()).public_key_pem
        return self._public_key

    def _load_active(self) -> None:
        state = self.store.load()
        content = state.active_content
        if content is None or state.active is None:
            return
        try:
            loaded = LoadedModel(
                self.store.model_path(state.active), digest=content.digest, threads=self.config.threads
            )
        except LoadFailed as exc:
            log.error("the active model does not load", extra={"digest": content.digest, "reason": str(exc)})
            return
        self.runtime.swap(loaded, shadow=None)
        with self._recorder_lock:
            self._recorder = WindowRecorder(digest=content.digest, started=datetime.now(UTC))


class _Reporter:
    """Publishes the steps of one install, for one desired revision."""

    def __init__(self, agent: Agent, desired: Desired) -> None:
        self._agent = agent
        self._desired = desired
        self.attempt = 1
        self._last_progress = -1.0

    async def __call__(
        self,
        step: InstallStep,
        *,
        slot: Slot | None = None,
        reason: str | None = None,
        progress: ProgressBytes | None = None,
    ) -> None:
        status = DeviceStatus(
            device_id=self._agent.config.device_id,
            desired_revision=self._desired.revision,
            digest=self._desired.state.digest,
            step=step,
            slot=slot,
            active_digest=self._agent.active_digest,
            reason=reason,
            attempt=self.attempt,
            progress=progress,
        )
        log.info("install step", extra={"step": step, "digest": status.digest, "revision": status.desired_revision})
        with contextlib.suppress(bus.BusError):  # a lost status is repaired by the next one
            await self._agent.link.status(status)

    def should_report_progress(self, done: int, total: int) -> bool:
        """At most every 10% (and at the end), so a slow link does not flood the status stream."""
        share = done / total if total else 1.0
        if share >= 1.0 or share - self._last_progress >= 0.1:
            self._last_progress = share
            return True
        return False


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
