"""One simulated device: its A/B slots and the install state machine of the device protocol.

The steps, their order, the reasons and the "never active unless verified" rule are the agent's
(`services/edge_agent/agent.py`): received → downloading (with progress) → downloaded → verifying →
verified → loading → smoke_testing → active, or failed with a reason. A desired digest already
serving is reported active at once; one still in the other slot is a switch back, with no
download. Only the active slot changes in the last step, so a failure or a crash at any step leaves
the previous model serving.

What is simulated is time and the link: a transfer sleeps for size / link speed; verification,
loading and the smoke run take the host-measured time times the class's speed factor. Everything
that decides an outcome goes through `InstallEnv`, whose implementation does the real checks.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from services.edge_agent.errors import AgentError, DownloadFailed
from services.edge_agent.fleet.artifacts import CachedArtifact
from services.edge_agent.fleet.classes import DeviceClass
from services.edge_agent.fleet.connections import Desired
from services.edge_agent.fleet.errors import FleetError
from services.edge_agent.fleet.faults import Fault
from shared.errors import CallerError, TransientError
from shared.messages.device import InstallStep, ProgressBytes, Slot
from shared.messages.registry import DownloadUrl

# Steps after which an injected crash may happen (the bytes are in flight or being installed).
CRASH_STEPS: tuple[InstallStep, ...] = ("downloading", "downloaded", "verified", "loading", "smoke_testing")
PROGRESS_SECONDS = 1.0  # a progress report at most this often...
PROGRESS_SHARE = 0.1  # ...and only after another 10% of the bytes, like the agent


class Presence(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    CRASHED = "crashed"


class DeviceCrashed(FleetError):
    """Injected fault: the device's process died right after reporting `step`."""

    def __init__(self, step: InstallStep) -> None:
        super().__init__(f"crashed after {step}")
        self.step = step


@dataclass(frozen=True, kw_only=True)
class InstallPolicy:
    download_attempts: int
    download_backoff: float
    slow_factor: float


@dataclass(frozen=True, kw_only=True)
class LoadTiming:
    """Host-measured time to load the model and run the smoke input once."""

    load_ms: float
    smoke_ms: float


class InstallEnv(Protocol):
    """What a device needs from the world while installing; the simulator implements it for real."""

    policy: InstallPolicy

    async def report(
        self,
        device: SimDevice,
        desired: Desired,
        step: InstallStep,
        *,
        slot: Slot | None = None,
        reason: str | None = None,
        attempt: int = 1,
        progress: ProgressBytes | None = None,
    ) -> None: ...

    async def download_url(self, device: SimDevice, digest: str) -> DownloadUrl: ...

    async def fetch(self, url: DownloadUrl) -> CachedArtifact: ...

    async def verify(self, device: SimDevice, artifact: CachedArtifact, desired: Desired) -> None: ...

    async def load(self, device: SimDevice, digest: str) -> LoadTiming: ...

    async def sleep(self, seconds: float) -> None: ...


class SimDevice:
    """State of one device; small on purpose (ten thousand of them live in one process)."""

    __slots__ = (
        "device_id",
        "index",
        "device_class",
        "fault",
        "connection",
        "real_inference",
        "presence",
        "slots",
        "active",
        "shadow",
        "revision",
        "settled_revision",
        "last_step",
        "last_reason",
        "changed_at",
        "converged_at",
        "crash_step",
        "task",
        "next_hello",
        "next_window",
        "window_start",
        "transfers",
    )

    def __init__(
        self,
        *,
        device_id: str,
        index: int,
        device_class: DeviceClass,
        fault: Fault | None,
        connection: int,
        real_inference: bool,
        rng: random.Random,
    ) -> None:
        self.device_id = device_id
        self.index = index
        self.device_class = device_class
        self.fault = fault
        self.connection = connection
        self.real_inference = real_inference
        self.presence = Presence.ONLINE
        self.slots: dict[Slot, str | None] = {"a": None, "b": None}
        self.active: Slot | None = None
        self.shadow = False
        self.revision = 0  # desired revision being (or last) acted on
        self.settled_revision = 0  # desired revision whose install ended (active or failed)
        self.last_step: InstallStep | None = None
        self.last_reason: str | None = None
        self.changed_at: float | None = None
        self.converged_at: float | None = None
        self.crash_step: InstallStep | None = rng.choice(CRASH_STEPS) if fault is Fault.CRASH else None
        self.task: asyncio.Task[None] | None = None
        self.next_hello = 0.0
        self.next_window = 0.0
        self.window_start: datetime | None = None
        self.transfers = 0

    @property
    def active_digest(self) -> str | None:
        return self.slots[self.active] if self.active else None

    @property
    def previous_digest(self) -> str | None:
        """The model in the other slot: what a rollback switches back to, and shadow mode compares with."""
        if self.active is None:
            return None
        return self.slots["b" if self.active == "a" else "a"]

    @property
    def inactive_slot(self) -> Slot:
        return "b" if self.active == "a" else "a"

    def slot_with(self, digest: str) -> Slot | None:
        for slot, content in self.slots.items():
            if content == digest:
                return slot
        return None

    async def converge(self, desired: Desired, env: InstallEnv) -> None:
        """Make `desired` the serving model, reporting each step; failures end as `failed`.

        Raises:
            DeviceCrashed: the injected crash of a `crash` device (once); the caller restarts it.
        """
        digest = desired.state.digest
        if self.active_digest == digest:
            self.shadow = desired.state.shadow
            await env.report(self, desired, "active", slot=self.active)
            return
        if (slot := self.slot_with(digest)) is not None:
            timing = await env.load(self, digest)
            await env.sleep(self._device_seconds(timing.load_ms + timing.smoke_ms))
            self.active, self.shadow = slot, desired.state.shadow  # back to the kept slot: no download
            await env.report(self, desired, "active", slot=slot)
            return
        await env.report(self, desired, "received")
        attempt = 1
        try:
            artifact, attempt = await self._download(desired, env)
            await self._step(env, desired, "downloaded", attempt=attempt)
            await self._step(env, desired, "verifying", attempt=attempt)
            await env.sleep(desired.state.size_bytes / self.device_class.hash_bytes_per_second)
            await env.verify(self, artifact, desired)
            await self._step(env, desired, "verified", attempt=attempt)
            target = self.inactive_slot
            # The slot is about to be overwritten: from here a crash leaves it empty, never half-written.
            self.slots[target] = None
            await self._step(env, desired, "loading", slot=target, attempt=attempt)
            timing = await env.load(self, digest)
            await env.sleep(self._device_seconds(timing.load_ms))
            await self._step(env, desired, "smoke_testing", slot=target, attempt=attempt)
            await env.sleep(self._device_seconds(timing.smoke_ms))
            self.slots[target] = digest
            self.active, self.shadow = target, desired.state.shadow  # the atomic switch
            await env.report(self, desired, "active", slot=target, attempt=attempt)
        except AgentError as exc:
            await env.report(self, desired, "failed", reason=str(exc), attempt=attempt)

    async def _download(self, desired: Desired, env: InstallEnv) -> tuple[CachedArtifact, int]:
        policy, digest, size = env.policy, desired.state.digest, desired.state.size_bytes
        last = "no attempt made"
        for attempt in range(1, policy.download_attempts + 1):
            if attempt > 1:
                await env.sleep(policy.download_backoff * 2 ** (attempt - 2))
            try:
                # A URL per attempt, as the agent does: a presigned URL may expire during back-off.
                artifact = await env.fetch(await env.download_url(self, digest))
            except CallerError as exc:
                raise DownloadFailed(f"the registry refused a download URL: {exc}") from None
            except TransientError as exc:
                last = str(exc)
                continue
            await self._step(env, desired, "downloading", attempt=attempt, progress=ProgressBytes(done=0, total=size))
            breaks = self.fault is Fault.DOWNLOAD_FAIL or (self.fault is Fault.FLAKY and attempt == 1)
            done = await self._transfer(env, desired, attempt=attempt, stop_share=0.3 if breaks else 1.0)
            if done == size:
                return artifact, attempt
            last = f"the connection dropped after {done} of {size} bytes (injected {self.fault} fault)"
        raise DownloadFailed(f"download did not complete after {policy.download_attempts} attempts: {last}")

    async def _transfer(self, env: InstallEnv, desired: Desired, *, attempt: int, stop_share: float) -> int:
        """Sleep through the transfer at this device's link speed; returns the bytes received."""
        size = desired.state.size_bytes
        speed = self.device_class.link_bytes_per_second
        if self.fault is Fault.SLOW:
            speed /= env.policy.slow_factor
        self.transfers += 1
        stop = int(size * stop_share)
        done = reported = 0
        while done < stop:
            seconds = min(PROGRESS_SECONDS, (stop - done) / speed)
            await env.sleep(seconds)
            done = min(stop, done + max(1, round(speed * seconds)))
            if done < size and done - reported >= size * PROGRESS_SHARE:
                reported = done
                progress = ProgressBytes(done=done, total=size)
                await env.report(self, desired, "downloading", attempt=attempt, progress=progress)
        return done

    async def _step(
        self,
        env: InstallEnv,
        desired: Desired,
        step: InstallStep,
        *,
        attempt: int,
        slot: Slot | None = None,
        progress: ProgressBytes | None = None,
    ) -> None:
        await env.report(self, desired, step, slot=slot, attempt=attempt, progress=progress)
        if self.crash_step == step:
            self.crash_step = None  # crashes once
            raise DeviceCrashed(step)

    def _device_seconds(self, host_ms: float) -> float:
        return host_ms * self.device_class.speed_factor / 1000.0
