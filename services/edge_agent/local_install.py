"""The install seams of a real device: slots on disk, HTTP downloads, the registry's key, onnxruntime.

`install.converge` decides and orders the steps; this module only does each one on this host:
* bytes: `<digest>.part` in the slot store's downloads, fetched by `transfer.fetch_range` on a
  thread (HTTP Range resume), hopping back to the event loop only when a progress status is due;
* verification: `verify.verify_artifact` with the registry's public key (asked once, then cached);
* slots: `SlotStore.commit` (temp file, fsync, rename) to clear a slot and to switch, `SlotStore.place`
  to move verified bytes in, `SlotStore.write_config` to store the desired state's settings beside
  the model before the switch names its slot (or, on a keep, as soon as they change);
* runtime: `LoadedModel` and its smoke run; after the switch is durable, the agent's `serve`
  callback swaps the sessions.

Each step that takes time or can fail is a span (`device.download` per attempt, `device.verify`,
`device.load`, `device.smoke_test`, `device.switch`), a child of the install's `device.install`
span, which the agent makes current around the install (`install_trace.py`). A step that raises
ends its span with ERROR and the exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace

import numpy as np
from opentelemetry import trace

from services.edge_agent import transfer as http
from services.edge_agent.desired import AppConfig
from services.edge_agent.errors import LoadFailed, VerificationFailed
from services.edge_agent.install import Progress, RetryPolicy, Slots, download
from services.edge_agent.install_trace import DOWNLOAD_SPAN, LOAD_SPAN, SMOKE_SPAN, SWITCH_SPAN, VERIFY_SPAN
from services.edge_agent.ports import Link
from services.edge_agent.runtime import LoadedModel, ModelRuntime
from services.edge_agent.slots import LocalState, SlotStore, installed
from services.edge_agent.verify import verify_artifact
from shared import bus
from shared.digests import sha256_file
from shared.messages.device import DesiredState, DeviceStatus, Slot, SmokeInput
from shared.messages.registry import DownloadUrl

PROGRESS_HOP_TIMEOUT = 30.0
log = logging.getLogger("slmops.agent")

# Make `active` serve, with `shadow` (or nothing) alongside it and the settings: the agent's runtime swap.
Serve = Callable[[LoadedModel, LoadedModel | None, AppConfig], Awaitable[None]]
# The serving model now serves for another desired state (its slot's rollout and wave changed).
Relabel = Callable[[], Awaitable[None]]


class LocalInstall:
    """`install.InstallIO[LoadedModel]` of the agent; one per agent (installs run one at a time).

    Args:
        link: the device's link (statuses, URLs, the public key).
        store: the slot store on disk.
        runtime: the serving sessions (read to keep the previous model as shadow).
        serve: what the agent does once a switch is durable (close the window, swap, hello).
        relabel: what the agent does once a kept slot's rollout and wave are durably another desired
            state's (close the window opened under the old ones); None: nothing.
        policy: the download attempts, also for the smoke input.
        threads: onnxruntime intra-op threads per session.
        rate_limit_bps: cap on download speed (None: as fast as the link goes).
        tracer: where the steps' spans go (default: the process's tracer provider).
    """

    def __init__(
        self,
        *,
        link: Link,
        store: SlotStore,
        runtime: ModelRuntime,
        serve: Serve,
        policy: RetryPolicy,
        relabel: Relabel | None = None,
        registry_key_pem: str,
        threads: int = 1,
        rate_limit_bps: int | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.device_id = link.device_id
        self._link = link
        self._store = store
        self._runtime = runtime
        self._serve = serve
        self._relabel = relabel
        self._policy = policy
        self._threads = threads
        self._rate_limit_bps = rate_limit_bps
        self._public_key = registry_key_pem
        self._tracer = tracer or trace.get_tracer("slmops.agent")

    # --- statuses and local state ---------------------------------------------------------------

    async def report(self, status: DeviceStatus) -> None:
        extra = {"step": status.step, "digest": status.digest, "revision": status.desired_revision}
        if status.step == "failed":
            log.warning("install failed", extra=extra | {"reason": status.reason})
        else:
            log.info("install step", extra=extra)
        with contextlib.suppress(bus.BusError):  # a lost status is repaired by the next one
            await self._link.status(status)

    async def slots(self) -> Slots:
        return await asyncio.to_thread(self._slots)

    def _slots(self) -> Slots:
        state = self._store.load()
        view = state.view()
        return replace(view, config_digest=self._store.config(state.active).digest) if state.active else view

    # --- bytes ------------------------------------------------------------------------------------

    async def download_url(self, digest: str) -> DownloadUrl:
        return await self._link.download_url(digest)

    async def held(self, digest: str, *, size: int) -> int:
        return await asyncio.to_thread(http.held, self._store.partial_download(digest), size=size)

    async def transfer(self, url: DownloadUrl, *, attempt: int, have: int, size: int, progress: Progress) -> int:
        loop = asyncio.get_running_loop()
        stop = threading.Event()  # set when this coroutine ends, cancelled or not: the thread stops too

        def on_progress(done: int) -> None:
            if not stop.is_set() and progress.due(done):
                asyncio.run_coroutine_threadsafe(progress.publish(done), loop).result(timeout=PROGRESS_HOP_TIMEOUT)

        attributes: dict[str, str | int] = {
            "slmops.digest": url.digest,
            "slmops.attempt": attempt,
            "slmops.resumed_from": have,
        }
        with self._tracer.start_as_current_span(DOWNLOAD_SPAN, attributes=attributes) as span:
            try:
                done = await asyncio.to_thread(
                    http.fetch_range,
                    url.url,
                    self._store.partial_download(url.digest),
                    have=have,
                    rate_limit_bps=self._rate_limit_bps,
                    on_progress=on_progress,
                    stop=stop,
                )
            finally:
                stop.set()
            span.set_attribute("slmops.bytes_held", done)
            return done

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def verify(self, desired: DesiredState) -> None:
        key = self._public_key
        part = self._store.partial_download(desired.digest)
        with self._tracer.start_as_current_span(VERIFY_SPAN, attributes={"slmops.digest": desired.digest}):
            await asyncio.to_thread(
                verify_artifact, part, digest=desired.digest, signature=desired.signature, public_key_pem=key
            )

    async def discard(self, digest: str) -> None:
        self._store.partial_download(digest).unlink(missing_ok=True)

    # --- slots ------------------------------------------------------------------------------------

    async def clear(self, slot: Slot) -> None:
        await asyncio.to_thread(self._commit_cleared, slot)

    async def place(self, slot: Slot, desired: DesiredState) -> None:
        await asyncio.to_thread(self._store.place, slot, self._store.partial_download(desired.digest))

    async def switch(
        self, slot: Slot, loaded: LoadedModel, desired: DesiredState, *, config_digest: str | None
    ) -> None:
        """One step, never half done: a newer revision's cancel that lands in the durable write or in
        `serve` (its awaits: the old window's publish, the hello) waits for both before it ends the
        install. Otherwise the state would name `slot` (and its labels) while the runtime kept
        serving the previous model, whose windows the next keep of this digest would never fix."""
        with self._tracer.start_as_current_span(SWITCH_SPAN, attributes={"slmops.slot": slot}):
            config = AppConfig(values=desired.config, digest=config_digest)
            step = asyncio.ensure_future(self._switch(slot, loaded, desired, config))
            try:
                await asyncio.shield(step)
            except asyncio.CancelledError:
                if not step.done():
                    await asyncio.wait({step})
                raise

    async def _switch(self, slot: Slot, loaded: LoadedModel, desired: DesiredState, config: AppConfig) -> None:
        previous, _ = self._runtime.current()
        await asyncio.to_thread(self._commit_active, slot, desired)
        await self._serve(loaded, previous if desired.shadow else None, config)

    async def keep(self, slot: Slot, desired: DesiredState, *, config_digest: str | None) -> None:
        if await asyncio.to_thread(self._commit_config, slot, desired, config_digest):
            log.info("settings changed", extra={"digest": desired.digest, "config_digest": config_digest})
        self._runtime.configure(AppConfig(values=desired.config, digest=config_digest))
        if await asyncio.to_thread(self._commit_provenance, slot, desired) and self._relabel is not None:
            await self._relabel()  # after the commit: the window it opens reads the new labels
        active, shadow = self._runtime.current()
        if active is None or desired.shadow == (shadow is not None):
            return
        if not desired.shadow:
            self._runtime.swap(active, shadow=None)
            return
        state = await asyncio.to_thread(self._store.load)
        other = state.view().inactive
        content = state.slots[other]
        if content is None:
            return  # nothing to compare with: serve alone
        try:
            previous = await asyncio.to_thread(
                LoadedModel, self._store.model_path(other), digest=content.digest, threads=self._threads
            )
        except LoadFailed as exc:  # the shadow model must never hurt the one serving
            log.warning("the previous model does not load for shadow mode", extra={"reason": str(exc)})
            return
        self._runtime.swap(active, shadow=previous)

    def _commit_cleared(self, slot: Slot) -> None:
        state = self._store.load()
        self._store.commit(LocalState(active=state.active, slots={**state.slots, slot: None}))
        self._store.write_config(slot, None)  # the settings of the model that was there go with it

    def _commit_active(self, slot: Slot, desired: DesiredState) -> None:
        # The settings first: until the state names the slot, they serve nothing (a crash between the
        # two leaves the previous model serving with its own settings).
        self._store.write_config(slot, desired.config)
        state = self._store.load()
        content = state.slots[slot]
        if content is None or content.digest != desired.digest:
            content = installed(desired.digest, model=desired.model, version=desired.version, variant=desired.variant)
        content = replace(content, rollout_id=desired.rollout_id, wave=desired.wave)
        self._store.commit(LocalState(active=slot, slots={**state.slots, slot: content}))

    def _commit_config(self, slot: Slot, desired: DesiredState, config_digest: str | None) -> bool:
        """The serving digest is desired again, maybe with other settings: store those (only if they
        differ from the slot's, and say whether they did). One atomic replace of the slot's file."""
        if self._store.config(slot).digest == config_digest:
            return False
        self._store.write_config(slot, desired.config)
        return True

    def _commit_provenance(self, slot: Slot, desired: DesiredState) -> bool:
        """The serving digest is desired again, maybe by another rollout or wave (or by hand now):
        its windows name the desired state it serves for, so record that (only if it changed, and
        say whether it did)."""
        state = self._store.load()
        content = state.slots[slot]
        if content is None or (content.rollout_id, content.wave) == (desired.rollout_id, desired.wave):
            return False
        content = replace(content, rollout_id=desired.rollout_id, wave=desired.wave)
        self._store.commit(LocalState(active=state.active, slots={**state.slots, slot: content}))
        return True

    # --- runtime ----------------------------------------------------------------------------------

    async def load(self, slot: Slot, desired: DesiredState) -> LoadedModel:
        with self._tracer.start_as_current_span(LOAD_SPAN, attributes={"slmops.slot": slot}):
            return await asyncio.to_thread(
                LoadedModel, self._store.model_path(slot), digest=desired.digest, threads=self._threads
            )

    async def smoke(self, loaded: LoadedModel, desired: DesiredState, *, may_download: bool) -> None:
        with self._tracer.start_as_current_span(SMOKE_SPAN):
            inputs = await self._smoke_inputs(desired.smoke_input, may_download=may_download)
            await asyncio.to_thread(loaded.smoke, inputs)

    async def _smoke_inputs(self, smoke: SmokeInput | None, *, may_download: bool) -> dict[str, np.ndarray] | None:
        """The first row of each array of the smoke input, fetched like a model and its sha256 checked;
        None (a synthetic input) when there is none, or it is not here and may not be downloaded."""
        if smoke is None:
            return None
        target = self._store.downloads / f"{smoke.digest}.npz"
        if not target.exists():
            if not may_download:
                return None
            await download(self, smoke.digest, size=smoke.size_bytes, policy=self._policy)
            os.replace(self._store.partial_download(smoke.digest), target)
        digest, _ = await asyncio.to_thread(sha256_file, target)
        if digest != smoke.digest:
            target.unlink(missing_ok=True)
            raise VerificationFailed(f"smoke input sha256 mismatch: expected {smoke.digest}, got {digest}")
        with np.load(target, allow_pickle=False) as npz:
            return {name: npz[name][:1] for name in npz.files}
