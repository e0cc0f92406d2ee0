"""One simulated device: its A/B slots, and its side of the install state machine's seams.

The state machine is the agent's own (`services/edge_agent/install.py`): the same steps in the
same order, the same reasons, retries and "never active unless verified" rule. This module only
says what each seam does on a simulated device (`SimInstall`):

* time and the link are simulated: a transfer sleeps for size / link speed, reporting progress as
  it goes; verification, loading and the smoke run take the host-measured time times the class's
  speed factor;
* everything that decides an outcome goes through `InstallEnv`, whose implementation (the
  simulator) does the real checks: a real presigned URL, the real bytes, `verify_artifact`, a real
  onnxruntime load and smoke run per digest;
* injected faults act in the seams: a `slow` link, a transfer that breaks part-way
  (`download_fail`, `flaky`), a `corrupt` copy (the env's verification fails it), and a `crash`
  right after reporting a step (`DeviceCrashed`, raised out of the state machine).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from services.edge_agent.desired import Desired
from services.edge_agent.errors import DownloadFailed
from services.edge_agent.fleet.artifacts import CachedArtifact
from services.edge_agent.fleet.classes import DeviceClass
from services.edge_agent.fleet.faults import Fault
from services.edge_agent.install import Progress, RetryPolicy, Slots, converge
from shared.messages.device import DesiredState, DeviceStatus, InstallStep, Slot
from shared.messages.registry import DownloadUrl

# Steps after which an injected crash may happen (the bytes are in flight or being installed).
CRASH_STEPS: tuple[InstallStep, ...] = ("downloading", "downloaded", "verified", "loading", "smoke_testing")
PROGRESS_SECONDS = 1.0  # a simulated transfer advances in steps of at most this long
BREAK_SHARE = 0.3  # where an injected broken download stops


class Presence(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    CRASHED = "crashed"


class DeviceCrashed(BaseException):
    """Injected fault: the device's process died right after reporting `step`.

    Not an error the install handles: a process that dies runs no handler, so, like
    `KeyboardInterrupt`, this derives from `BaseException` and only the simulator catches it.
    """

    def __init__(self, step: InstallStep) -> None:
        super().__init__(f"crashed after {step}")
        self.step = step


@dataclass(frozen=True, kw_only=True)
class InstallPolicy:
    download_attempts: int
    download_backoff: float
    slow_factor: float
    retry: RetryPolicy = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "retry", RetryPolicy(attempts=self.download_attempts, backoff=self.download_backoff))


@dataclass(frozen=True, kw_only=True)
class LoadTiming:
    """Host-measured time to load the model and run the smoke input once."""

    load_ms: float
    smoke_ms: float


class InstallEnv(Protocol):
    """What a device needs from the world while installing; the simulator implements it for real."""

    policy: InstallPolicy

    async def publish(self, device: SimDevice, status: DeviceStatus) -> None:
        """Put the status on the device's subject (a lost publish is counted, not raised)."""
        ...

    async def download_url(self, device: SimDevice, digest: str) -> DownloadUrl:
        """A presigned URL from the registry (`CallerError`: refused; `TransientError`: no answer)."""
        ...

    async def fetch(self, url: DownloadUrl) -> CachedArtifact:
        """The bytes behind `url`, downloaded for real once per digest (`DownloadFailed` if not)."""
        ...

    async def verify(self, device: SimDevice, artifact: CachedArtifact, desired: DesiredState) -> None:
        """This device's copy checked for real (`VerificationFailed`)."""
        ...

    async def load(self, device: SimDevice, digest: str) -> LoadTiming:
        """The host-measured load and smoke times of `digest` (`LoadFailed` if it does not load)."""
        ...

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
        "inputs_shift",
        "presence",
        "slots",
        "active",
        "shadow",
        "config_digest",
        "rollout",
        "reference_served",
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
        "switched",
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
        inputs_shift: bool = False,
    ) -> None:
        self.device_id = device_id
        self.index = index
        self.device_class = device_class
        self.fault = fault
        self.connection = connection
        self.real_inference = real_inference
        self.inputs_shift = inputs_shift  # one of the devices whose inputs shift (`--input-shift-after`)
        self.presence = Presence.ONLINE
        self.slots: dict[Slot, str | None] = {"a": None, "b": None}
        self.active: Slot | None = None
        self.shadow = False
        self.config_digest: str | None = None  # the settings serving with the active model (survive a crash)
        # (rollout_id, wave) of the desired state the active model serves for; like the agent's slot
        # state, it survives a crash. Requests served per digest, for the reference centroid rule.
        self.rollout: tuple[str | None, int | None] = (None, None)
        self.reference_served: dict[str, int] = {}
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
        self.switched = False  # the next window is the new model's first: short (FIRST_WINDOW_SECONDS)
        self.transfers = 0

    @property
    def active_digest(self) -> str | None:
        return self.slots[self.active] if self.active else None

    @property
    def serving(self) -> tuple[str, str | None, int | None] | None:
        """(digest, rollout_id, wave) of the model serving now, or None: one read, so the labels are
        those of the desired state this digest was installed or kept for (`SimInstall.switch` and
        `keep` change them together with it). A window takes both from here at once; reading the
        digest, awaiting, then reading the labels gave a window on the old digest the new rollout's.
        """
        digest = self.active_digest
        return None if digest is None else (digest, *self.rollout)

    @property
    def previous_digest(self) -> str | None:
        """The model in the other slot: what a rollback switches back to, and shadow mode compares with."""
        if self.active is None:
            return None
        return self.slots["b" if self.active == "a" else "a"]

    def slot_with(self, digest: str) -> Slot | None:
        return self.view().slot_with(digest)

    def view(self) -> Slots:
        """The slots as the install state machine decides on them."""
        return Slots(active=self.active, contents=self.slots, config_digest=self.config_digest)

    def converge(self, desired: Desired, env: InstallEnv) -> Coroutine[Any, Any, DeviceStatus]:
        """Make `desired` the serving model, reporting each step; failures end as `failed`.

        The install state machine's coroutine itself, not a wrapper around it: at ten thousand
        devices, every frame an await passes through costs. It returns the last status reported.

        Raises:
            DeviceCrashed: the injected crash of a `crash` device (once); the caller restarts it.
        """
        return converge(desired, SimInstall(self, env), policy=env.policy.retry)

    def device_seconds(self, host_ms: float) -> float:
        """How long something that takes `host_ms` on this host takes on this device."""
        return host_ms * self.device_class.speed_factor / 1000.0


class SimInstall:
    """`install.InstallIO[LoadTiming]` of one simulated device, for one install."""

    __slots__ = ("device", "device_id", "_env", "_artifact")

    def __init__(self, device: SimDevice, env: InstallEnv) -> None:
        self.device = device
        self.device_id = device.device_id
        self._env = env
        self._artifact: CachedArtifact | None = None

    async def report(self, status: DeviceStatus) -> None:
        dev = self.device
        await self._env.publish(dev, status)
        dev.last_step, dev.last_reason = status.step, status.reason
        if status.step == "active" or status.step == "failed":
            dev.settled_revision = status.desired_revision
            if status.step == "active":
                dev.converged_at = asyncio.get_running_loop().time()
        elif dev.crash_step == status.step:
            dev.crash_step = None  # crashes once
            raise DeviceCrashed(status.step)

    async def slots(self) -> Slots:
        return self.device.view()

    async def download_url(self, digest: str) -> DownloadUrl:
        return await self._env.download_url(self.device, digest)

    async def held(self, digest: str, *, size: int) -> int:
        return 0  # a simulated device keeps no partial bytes: every attempt starts over

    async def transfer(self, url: DownloadUrl, *, attempt: int, have: int, size: int, progress: Progress) -> int:
        """Sleep through the transfer at this device's link speed; an injected fault breaks it at 30 %."""
        dev = self.device
        self._artifact = await self._env.fetch(url)
        speed = dev.device_class.link_bytes_per_second
        if dev.fault is Fault.SLOW:
            speed /= self._env.policy.slow_factor
        dev.transfers += 1
        breaks = dev.fault is Fault.DOWNLOAD_FAIL or (dev.fault is Fault.FLAKY and attempt == 1)
        stop = int(size * BREAK_SHARE) if breaks else size
        done = have
        while done < stop:
            seconds = min(PROGRESS_SECONDS, (stop - done) / speed)
            await self._env.sleep(seconds)
            done = min(stop, done + max(1, round(speed * seconds)))
            await progress.update(done)
        if done < size:
            raise DownloadFailed(f"the connection dropped after {done} of {size} bytes (injected {dev.fault} fault)")
        return done

    async def sleep(self, seconds: float) -> None:
        await self._env.sleep(seconds)

    async def verify(self, desired: DesiredState) -> None:
        if self._artifact is None:
            raise RuntimeError("verify before any transfer")  # the state machine never does this
        await self._env.sleep(desired.size_bytes / self.device.device_class.hash_bytes_per_second)
        await self._env.verify(self.device, self._artifact, desired)

    async def discard(self, digest: str) -> None:
        self._artifact = None  # the device's copy is gone; the cache keeps the verified original

    async def clear(self, slot: Slot) -> None:
        self.device.slots[slot] = None  # from here a crash leaves the slot empty, never half-written

    async def place(self, slot: Slot, desired: DesiredState) -> None:
        """Nothing to move: the slot's content is a digest, set by the switch."""

    async def load(self, slot: Slot, desired: DesiredState) -> LoadTiming:
        timing = await self._env.load(self.device, desired.digest)
        await self._env.sleep(self.device.device_seconds(timing.load_ms))
        return timing

    async def smoke(self, loaded: LoadTiming, desired: DesiredState, *, may_download: bool) -> None:
        await self._env.sleep(self.device.device_seconds(loaded.smoke_ms))

    async def switch(self, slot: Slot, loaded: LoadTiming, desired: DesiredState, *, config_digest: str | None) -> None:
        dev = self.device
        dev.slots[slot] = desired.digest
        dev.active, dev.shadow = slot, desired.shadow  # the atomic switch, labels and settings included
        dev.config_digest = config_digest
        dev.rollout = (desired.rollout_id, desired.wave)
        dev.window_start = None  # the next drawn window is about the new model only, from now on
        dev.switched = True

    async def keep(self, slot: Slot, desired: DesiredState, *, config_digest: str | None) -> None:
        dev = self.device
        dev.config_digest = config_digest  # new settings alone: nothing to download, nothing to reload
        serves_for = (desired.shadow, (desired.rollout_id, desired.wave))
        if (dev.shadow, dev.rollout) != serves_for:
            dev.shadow, dev.rollout = serves_for
            dev.window_start = None  # no drawn window spans two desired states (the agent's rule too)
