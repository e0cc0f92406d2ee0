"""The device protocol's install state machine, written once for the agent and every simulated device.

    desired digest already serving ───────────────────────────────────────────────────▶ active
    desired digest in the other slot ──(load, smoke, switch)──────────────────────────▶ active
    received ▶ downloading ▶ downloaded ▶ verifying ▶ verified ▶ (clear the slot, place)
             ▶ loading ▶ smoke_testing ▶ (switch) ▶ active
    any step ──▶ failed (reason); the previous model keeps serving

A desired state's settings (`config`) travel with its model: the switch stores them with the slot
it makes active, a keep of the serving digest adopts them (a change of settings alone downloads
nothing), and every status names the settings serving after its step (`config_digest`).

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
* any other platform error while asking for a URL (`TransientError`, including `shared.bus.BusError`,
  or the registry failing) or while transferring counts as a failed download attempt: retried with
  back-off within the bounded attempts; elsewhere (the public key, say) → `failed`;
* anything else (a programming error; a simulator's injected crash, which is no error) propagates
  to the caller, and `asyncio.CancelledError` (a newer revision won) ends the install silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from services.edge_agent.desired import Desired
from services.edge_agent.errors import AgentError, DownloadFailed, DownloadRefused, VerificationFailed
from shared.errors import CallerError, SlmopsError, TransientError
from shared.messages.device import DesiredState, DeviceStatus, InstallStep, ProgressBytes, Slot
from shared.messages.registry import DownloadUrl

PROGRESS_SHARE = 0.1  # a `downloading` status after another 10 % of the bytes, not more often

LoadedT = TypeVar("LoadedT")
Action = Literal["keep", "switch", "install"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Slots:
    """What a device's two slots hold (a digest or nothing), which one serves, and the digest of the
    settings that serve with it (None: none)."""

    active: Slot | None
    contents: Mapping[Slot, str | None]
    config_digest: str | None = None

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


@dataclass(frozen=True, kw_only=True, slots=True)
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


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """Bounded download attempts with exponential back-off (the protocol's: 4 attempts, 0.5 s doubling)."""

    attempts: int = 4
    backoff: float = 0.5

    def delay(self, attempt: int) -> float:
        """Seconds to wait before `attempt` (1-based): none before the first, then `backoff` doubling."""
        return 0.0 if attempt <= 1 else self.backoff * 2 ** (attempt - 2)


class ProgressSink(Protocol):
    """Who hears of a download's progress, by attempt (the install: a `downloading` status)."""

    async def downloading(self, attempt: int, progress: ProgressBytes) -> None: ...


class _Silent:
    """A download nobody reports on (the smoke input)."""

    async def downloading(self, attempt: int, progress: ProgressBytes) -> None:
        return None


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
        await self._sink.downloading(self.attempt, ProgressBytes(done=done, total=self.total))

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

    async def smoke(self, loaded: LoadedT, desired: DesiredState, *, may_download: bool) -> None:
        """Run the smoke input (the desired state's, or a synthetic one).

        Args:
            may_download: False on a switch back: rollback needs no download, so a smoke input that
                is not here any more is replaced by a synthetic one.

        Raises:
            LoadFailed: it errors or produces non-finite values.
        """
        ...

    async def switch(self, slot: Slot, loaded: LoadedT, desired: DesiredState, *, config_digest: str | None) -> None:
        """Make `slot` the active one, with the desired state's settings (`config`, whose digest is
        `config_digest`), in one durable write; only then let `loaded` serve."""
        ...

    async def keep(self, slot: Slot, desired: DesiredState, *, config_digest: str | None) -> None:
        """The digest already serves from `slot`: adopt the rest of the desired state (shadow mode,
        and its settings, durably, when `config_digest` is not what serves)."""
        ...


async def download(
    source: ByteSource, digest: str, *, size: int, policy: RetryPolicy, on_progress: ProgressSink | None = None
) -> int:
    """Fetch `size` bytes of `digest`, resuming what is held, with a fresh URL per attempt.

    Args:
        source: the device's byte source.
        digest: what to fetch.
        size: how many bytes make it complete.
        policy: the bounded attempts and their back-off.
        on_progress: told each attempt's starting point, then what `Progress` finds due (None:
            nobody is told).

    Returns:
        The attempt that completed it.

    Raises:
        DownloadRefused: the registry refused a URL for `digest`.
        DownloadFailed: still incomplete after `policy.attempts` (what is held is kept).
    """
    sink = on_progress or _Silent()
    last = "no attempt made"
    for attempt in range(1, policy.attempts + 1):
        if attempt > 1:
            await source.sleep(policy.delay(attempt))
        have = await source.held(digest, size=size)
        if have >= size:
            await sink.downloading(attempt, ProgressBytes(done=size, total=size))
            return attempt
        try:
            url = await source.download_url(digest)
        except CallerError as exc:
            raise DownloadRefused(f"the registry refused a download URL: {exc}") from None
        except SlmopsError as exc:  # did not answer (or failed inside): a failed attempt
            last = f"no download URL: {exc}"
            continue
        await sink.downloading(attempt, ProgressBytes(done=have, total=size))
        progress = Progress(sink, attempt=attempt, start=have, total=size)
        try:
            done = await source.transfer(url, attempt=attempt, have=have, size=size, progress=progress)
        except TransientError as exc:
            last = str(exc)
            continue
        if done == size:
            return attempt
        last = f"the transfer ended after {done} of {size} bytes"
    raise DownloadFailed(f"download did not complete after {policy.attempts} attempts: {last}")


async def converge(desired: Desired, io: InstallIO[LoadedT], *, policy: RetryPolicy) -> DeviceStatus:
    """Make `desired` the serving model, reporting each step; a failure ends as a `failed` status.

    One function on purpose: ten thousand simulated devices run it at once, and every frame an
    await passes through, and every object an install holds, costs the simulator CPU and GC time.

    Args:
        desired: the desired state and the revision every status echoes.
        io: the device's seams.
        policy: download attempts and back-off.

    Returns:
        The last status reported, `active` or `failed` (with its reason): how the install ended,
        for the caller's trace (`install_trace.py`).

    Raises:
        asyncio.CancelledError: a newer revision cancelled this install (nothing more is reported).
    """
    state = desired.state
    slots = await io.slots()
    decided = plan(slots, state.digest)
    action, slot = decided.action, decided.slot
    report = _Reporter(desired, io, active_digest=slots.active_digest, config_digest=slots.config_digest)
    del slots, decided  # not needed past the decision: ten thousand waiting installs would hold them
    try:
        if action == "keep":
            await io.keep(slot, state, config_digest=desired.config_digest)
        elif action == "switch":  # back to the kept slot: no download
            loaded = await io.load(slot, state)
            await io.smoke(loaded, state, may_download=False)
            await io.switch(slot, loaded, state, config_digest=desired.config_digest)
            report.active_digest = state.digest
        else:
            await report("received")
            report.attempt = await download(io, state.digest, size=state.size_bytes, policy=policy, on_progress=report)
            await report("downloaded")
            await report("verifying")
            try:
                await io.verify(state)
            except VerificationFailed:
                await io.discard(state.digest)  # never keep bytes that failed verification
                raise
            await report("verified")
            # The slot is about to be overwritten: record that first, so a crash never leaves the
            # state naming content the slot no longer holds.
            await io.clear(slot)
            await io.place(slot, state)
            await report("loading", slot=slot)
            loaded = await io.load(slot, state)
            await report("smoke_testing", slot=slot)
            await io.smoke(loaded, state, may_download=True)
            await io.switch(slot, loaded, state, config_digest=desired.config_digest)  # what serves changes here
            report.active_digest = state.digest
        report.config_digest = desired.config_digest
        return await report("active", slot=slot)
    except AgentError as exc:
        return await report("failed", reason=str(exc))
    except CallerError as exc:
        return await report("failed", reason=f"the registry refused: {exc}")
    except TransientError as exc:
        return await report("failed", reason=f"cannot reach the registry: {exc}")
    except SlmopsError as exc:  # e.g. the registry failed on a request (`internal`): still an answer
        return await report("failed", reason=f"the registry failed: {exc}")


class _Reporter:
    """The statuses of one install: its revision, what serves now (model and settings), and the
    attempt they carry."""

    __slots__ = ("desired", "io", "active_digest", "config_digest", "attempt")

    def __init__(
        self, desired: Desired, io: InstallIO[Any], *, active_digest: str | None, config_digest: str | None
    ) -> None:
        self.desired = desired
        self.io = io
        self.active_digest = active_digest
        self.config_digest = config_digest
        self.attempt = 1

    async def downloading(self, attempt: int, progress: ProgressBytes) -> None:
        """`ProgressSink`: a `downloading` status for `attempt`."""
        self.attempt = attempt
        await self("downloading", progress=progress)

    async def __call__(
        self,
        step: InstallStep,
        *,
        slot: Slot | None = None,
        reason: str | None = None,
        progress: ProgressBytes | None = None,
    ) -> DeviceStatus:
        """Report `step` for this install; returns the status reported."""
        status = DeviceStatus(
            device_id=self.io.device_id,
            desired_revision=self.desired.revision,
            digest=self.desired.state.digest,
            step=step,
            slot=slot,
            active_digest=self.active_digest,
            config_digest=self.config_digest,
            reason=reason,
            attempt=self.attempt,
            progress=progress,
        )
        await self.io.report(status)
        return status
