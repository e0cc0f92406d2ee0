"""The device protocol's install state machine, written once for the agent and every simulated device.

    desired digest already serving ───────────────────────────────────────────────────▶ active
    desired digest in the other slot ──(load, smoke, switch)──────────────────────────▶ active
    received ▶ downloading ▶ downloaded ▶ verifying ▶ verified ▶ (clear the slot, place)
             ▶ loading ▶ smoke_testing ▶ (switch) ▶ active
    any step ──▶ failed (reason); the previous model keeps serving

What to do for a desired state is a pure decision over the local slots (`plan`); doing it is
`converge`, a plain sequence of awaits over the device's seams (`InstallIO`). The agent implements
the seams with its slot store on disk, HTTP downloads and onnxruntime (`local_install.py`); a
simulated device with simulated time over real verification (`fleet/device.py`). So the order of
the steps, what each status says, the retry rules and the crash-safety order are the same code on
both, and a rollout tested against the simulator is tested against the agent's protocol.

The crash-safety order lives here, not in the seams: the target slot is cleared durably before the
verified bytes are placed in it, and `switch` (one durable write, then the runtime swaps) is the
only step that changes what serves. A failure or a crash before it leaves the previous model active.

Errors, and what becomes of them:
* an `AgentError` from any step (verification, load, smoke, download) → `failed` with its message;
* a registry refusal (`CallerError`, e.g. `NotFound` for the digest) → `failed` at once, never retried;
* a transient error (`TransientError`, including `shared.bus.BusError`) while asking for a URL or
  transferring counts as a failed download attempt: retried with back-off within the bounded
  attempts; elsewhere (the public key, say) → `failed`;
* anything else (a programming error, a simulator's injected crash) propagates to the caller, and
  `asyncio.CancelledError` (a newer revision won) ends the install silently.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from services.edge_agent.desired import Desired
from services.edge_agent.errors import AgentError, DownloadFailed, DownloadRefused, VerificationFailed
from shared.errors import CallerError, SlmopsError, TransientError
from shared.messages.device import DesiredState, DeviceStatus, InstallStep, ProgressBytes, Slot
from shared.messages.registry import DownloadUrl

PROGRESS_SHARE = 0.1  # a `downloading` status after another 10 % of the bytes, not more often

LoadedT = TypeVar("LoadedT")
# A download's progress, by attempt: the status `downloading` carries both.
ProgressSink = Callable[[int, ProgressBytes], Awaitable[None]]
Action = Literal["keep", "switch", "install"]


@dataclass(frozen=True, kw_only=True)
class Slots:
    """What a device's two slots hold (a digest or nothing) and which one serves."""

    active: Slot | None
    contents: Mapping[Slot, str | None]

    @property
    def active_digest(self) -> str | None:
        return self.contents[self.active] if self.active else None

    @property
    def inactive(self) -> Slot:
        """The slot a new model is written to (never the serving one)."""
        return "b" if self.active == "a" else "a"

    def slot_with(self, digest: str) -> Slot | None:
        for slot in ("a", "b"):
            if self.contents[slot] == digest:
                return slot
        return None


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What a device does for a desired digest.

    Attributes:
        action: `keep` (already serving), `switch` (in the other slot: load, smoke, switch; no
            download) or `install` (download into the inactive slot).
        slot: the serving slot, the slot that holds the digest, or the slot to write.
    """

    action: Action
    slot: Slot


def plan(slots: Slots, digest: str) -> Plan:
    """Decide what to do for `digest` given the local slots (pure: a table of cases tests it)."""
    if slots.active is not None and slots.active_digest == digest:
        return Plan(action="keep", slot=slots.active)
    if (slot := slots.slot_with(digest)) is not None:
        return Plan(action="switch", slot=slot)
    return Plan(action="install", slot=slots.inactive)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Bounded download attempts with exponential back-off (the protocol's: 4 attempts, 0.5 s doubling)."""

    attempts: int = 4
    backoff: float = 0.5

    def delay(self, attempt: int) -> float:
        """Seconds to wait before `attempt` (1-based): none before the first, then `backoff` doubling."""
        return 0.0 if attempt <= 1 else self.backoff * 2 ** (attempt - 2)


class Progress:
    """Which byte counts of one download attempt are worth a `downloading` status.

    One after another `PROGRESS_SHARE` of the bytes, never at the end (`downloaded` says that), so a
    slow link does not flood the status stream. `due` only does the bookkeeping, so a transfer
    running on a thread can ask it there and hop to the event loop only to `publish`.
    """

    __slots__ = ("_sink", "attempt", "total", "_reported")

    def __init__(self, sink: ProgressSink, *, attempt: int, start: int, total: int) -> None:
        self._sink = sink
        self.attempt = attempt
        self.total = total
        self._reported = start

    def due(self, done: int) -> bool:
        """True (and remembered) if `done` bytes are another 10 % since the last status."""
        if done >= self.total or done - self._reported < self.total * PROGRESS_SHARE:
            return False
        self._reported = done
        return True

    async def publish(self, done: int) -> None:
        await self._sink(self.attempt, ProgressBytes(done=done, total=self.total))

    async def update(self, done: int) -> None:
        """Publish `done` if it is due (what a transfer on the event loop calls)."""
        if self.due(done):
            await self.publish(done)


class ByteSource(Protocol):
    """Where a device's bytes come from: presigned URLs from the registry and a link to fetch them."""

    async def download_url(self, digest: str) -> DownloadUrl:
        """A fresh presigned URL for `digest` (asked again for every attempt: URLs expire).

        Raises:
            CallerError: the registry refused (no such digest): the download fails at once.
            TransientError: the registry did not answer: a failed attempt, retried.
        """
        ...

    async def held(self, digest: str, *, size: int) -> int:
        """Bytes of `digest` already here to resume from (0 to `size`)."""
        ...

    async def transfer(self, url: DownloadUrl, *, attempt: int, have: int, size: int, progress: Progress) -> int:
        """Fetch the bytes after the first `have`, feeding `progress`; returns the bytes now held.

        Raises:
            TransientError: the attempt broke (the reason says how); counted, retried.
        """
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait (back-off); a simulated device sleeps simulated time."""
        ...


class InstallIO(ByteSource, Protocol[LoadedT]):
    """A device's seams, for one install. `LoadedT` is whatever `load` hands to `smoke` and `switch`."""

    device_id: str

    async def report(self, status: DeviceStatus) -> None:
        """Publish a status; a lost publish is not an error (the next status repairs the picture)."""
        ...

    async def slots(self) -> Slots:
        """The local slots as they are now."""
        ...

    async def verify(self, desired: DesiredState) -> None:
        """Check the downloaded bytes: sha256 = digest and the registry's signature.

        Raises:
            VerificationFailed: either check fails (the bytes are discarded, never retried).
        """
        ...

    async def discard(self, digest: str) -> None:
        """Delete downloaded bytes that failed verification."""
        ...

    async def clear(self, slot: Slot) -> None:
        """Record durably that `slot` is empty, before anything overwrites it."""
        ...

    async def place(self, slot: Slot, desired: DesiredState) -> None:
        """Move the verified bytes into `slot` (cleared first), durably."""
        ...

    async def load(self, slot: Slot, desired: DesiredState) -> LoadedT:
        """Load the model in `slot` into the runtime, next to the one serving.

        Raises:
            LoadFailed: it does not load on this device.
        """
        ...

    async def smoke(self, loaded: LoadedT, desired: DesiredState) -> None:
        """Run the smoke input (the desired state's, or a synthetic one).

        Raises:
            LoadFailed: it errors or produces non-finite values.
        """
        ...

    async def switch(self, slot: Slot, loaded: LoadedT, desired: DesiredState) -> None:
        """Make `slot` the active one in one durable write; only then let `loaded` serve."""
        ...

    async def keep(self, slot: Slot, desired: DesiredState) -> None:
        """The digest already serves from `slot`: adopt the rest of the desired state (shadow mode)."""
        ...


async def _no_progress(attempt: int, progress: ProgressBytes) -> None:
    """A download nobody reports on (the smoke input)."""


async def download(
    source: ByteSource, digest: str, *, size: int, policy: RetryPolicy, on_progress: ProgressSink = _no_progress
) -> int:
    """Fetch `size` bytes of `digest`, resuming what is held, with a fresh URL per attempt.

    Args:
        source: the device's byte source.
        digest: what to fetch.
        size: how many bytes make it complete.
        policy: the bounded attempts and their back-off.
        on_progress: called with each attempt's starting point, then as `Progress` finds due.

    Returns:
        The attempt that completed it.

    Raises:
        DownloadRefused: the registry refused a URL for `digest`.
        DownloadFailed: still incomplete after `policy.attempts` (what is held is kept).
    """
    last = "no attempt made"
    for attempt in range(1, policy.attempts + 1):
        if attempt > 1:
            await source.sleep(policy.delay(attempt))
        have = await source.held(digest, size=size)
        if have >= size:
            await on_progress(attempt, ProgressBytes(done=size, total=size))
            return attempt
        try:
            url = await source.download_url(digest)
        except CallerError as exc:
            raise DownloadRefused(f"the registry refused a download URL: {exc}") from None
        except SlmopsError as exc:  # did not answer (or failed inside): a failed attempt
            last = f"no download URL: {exc}"
            continue
        await on_progress(attempt, ProgressBytes(done=have, total=size))
        progress = Progress(on_progress, attempt=attempt, start=have, total=size)
        try:
            done = await source.transfer(url, attempt=attempt, have=have, size=size, progress=progress)
        except TransientError as exc:
            last = str(exc)
            continue
        if done == size:
            return attempt
        last = f"the transfer ended after {done} of {size} bytes"
    raise DownloadFailed(f"download did not complete after {policy.attempts} attempts: {last}")


async def converge(desired: Desired, io: InstallIO[LoadedT], *, policy: RetryPolicy) -> None:
    """Make `desired` the serving model, reporting each step; a failure ends as a `failed` status.

    Args:
        desired: the desired state and the revision every status echoes.
        io: the device's seams.
        policy: download attempts and back-off.

    Raises:
        asyncio.CancelledError: a newer revision cancelled this install (nothing more is reported).
    """
    install = _Install(desired, io, policy=policy, slots=await io.slots())
    await install.run()


class _Install(Generic[LoadedT]):
    """One install: the desired revision, what serves now, and the attempt the statuses carry."""

    def __init__(self, desired: Desired, io: InstallIO[LoadedT], *, policy: RetryPolicy, slots: Slots) -> None:
        self.desired = desired
        self.io = io
        self.policy = policy
        self.plan = plan(slots, desired.state.digest)
        self.active_digest = slots.active_digest
        self.attempt = 1

    async def run(self) -> None:
        state, slot = self.desired.state, self.plan.slot
        try:
            if self.plan.action == "keep":
                await self.io.keep(slot, state)
                await self.report("active", slot=slot)
            elif self.plan.action == "switch":  # back to the kept slot: no download
                loaded = await self.io.load(slot, state)
                await self.io.smoke(loaded, state)
                await self.switch(slot, loaded)
                await self.report("active", slot=slot)
            else:
                await self.install(slot)
        except AgentError as exc:
            await self.report("failed", reason=str(exc))
        except CallerError as exc:
            await self.report("failed", reason=f"the registry refused: {exc}")
        except TransientError as exc:
            await self.report("failed", reason=f"cannot reach the registry: {exc}")

    async def install(self, target: Slot) -> None:
        state, io = self.desired.state, self.io
        await self.report("received")
        self.attempt = await download(
            io, state.digest, size=state.size_bytes, policy=self.policy, on_progress=self.downloading
        )
        await self.report("downloaded")
        await self.report("verifying")
        try:
            await io.verify(state)
        except VerificationFailed:
            await io.discard(state.digest)  # never keep bytes that failed verification
            raise
        await self.report("verified")
        # The slot is about to be overwritten: record that first, so a crash never leaves the state
        # naming content the slot no longer holds.
        await io.clear(target)
        await io.place(target, state)
        await self.report("loading", slot=target)
        loaded = await io.load(target, state)
        await self.report("smoke_testing", slot=target)
        await io.smoke(loaded, state)
        await self.switch(target, loaded)
        await self.report("active", slot=target)

    async def switch(self, slot: Slot, loaded: LoadedT) -> None:
        await self.io.switch(slot, loaded, self.desired.state)
        self.active_digest = self.desired.state.digest

    async def downloading(self, attempt: int, progress: ProgressBytes) -> None:
        self.attempt = attempt
        await self.report("downloading", progress=progress)

    async def report(
        self,
        step: InstallStep,
        *,
        slot: Slot | None = None,
        reason: str | None = None,
        progress: ProgressBytes | None = None,
    ) -> None:
        await self.io.report(
            DeviceStatus(
                device_id=self.io.device_id,
                desired_revision=self.desired.revision,
                digest=self.desired.state.digest,
                step=step,
                slot=slot,
                active_digest=self.active_digest,
                reason=reason,
                attempt=self.attempt,
                progress=progress,
            )
        )
