"""The simulated device's install state machine, against an in-memory world."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.edge_agent.desired import Desired
from services.edge_agent.errors import VerificationFailed
from services.edge_agent.fleet.artifacts import CachedArtifact
from services.edge_agent.fleet.classes import BUILT_IN
from services.edge_agent.fleet.device import DeviceCrashed, InstallPolicy, LoadTiming, SimDevice
from services.edge_agent.fleet.faults import Fault
from shared.bus import BusError
from shared.errors import NotFound
from shared.messages.common import config_digest
from shared.messages.device import DesiredState, DeviceStatus, InstallStep, ProgressBytes, Slot
from shared.messages.registry import DownloadUrl
from tests.unit.edge_agent.conftest import DEVICE, INSTALL, desired, desired_state

V1, V2 = "1" * 64, "2" * 64


@dataclass
class Reported:
    step: InstallStep
    revision: int
    slot: Slot | None
    active_digest: str | None
    reason: str | None
    attempt: int
    progress: ProgressBytes | None
    config_digest: str | None = None


@dataclass
class World:
    """Records what the device says; `bad_digests` fail verification."""

    policy: InstallPolicy = field(
        default_factory=lambda: InstallPolicy(download_attempts=3, download_backoff=0.5, slow_factor=10.0)
    )
    reported: list[Reported] = field(default_factory=list)
    url_requests: int = 0
    slept: float = 0.0
    bad_digests: set[str] = field(default_factory=set)
    url_errors: list[Exception] = field(default_factory=list)  # raised by the next URL requests, in order

    async def publish(self, device: SimDevice, status: DeviceStatus) -> None:
        s = status
        self.reported.append(
            Reported(
                s.step, s.desired_revision, s.slot, s.active_digest, s.reason, s.attempt, s.progress, s.config_digest
            )
        )

    async def download_url(self, device: SimDevice, digest: str) -> DownloadUrl:
        self.url_requests += 1
        if self.url_errors:
            raise self.url_errors.pop(0)
        return DownloadUrl(url="http://s3/x", digest=digest, size_bytes=1000, signature="sig", expires_in_seconds=300)

    async def fetch(self, url: DownloadUrl) -> CachedArtifact:
        return CachedArtifact(digest=url.digest, size_bytes=url.size_bytes, path=Path("/nonexistent"))

    async def verify(self, device: SimDevice, artifact: CachedArtifact, desired: DesiredState) -> None:
        if artifact.digest in self.bad_digests or device.fault is Fault.CORRUPT:
            raise VerificationFailed(f"sha256 mismatch: expected {artifact.digest}")

    async def load(self, device: SimDevice, digest: str) -> LoadTiming:
        return LoadTiming(load_ms=2.0, smoke_ms=0.1)

    async def sleep(self, seconds: float) -> None:
        self.slept += seconds

    def steps(self) -> list[InstallStep]:
        return [r.step for r in self.reported]


def device(fault: Fault | None = None, cls: str = "rpi5") -> SimDevice:
    return SimDevice(
        device_id=DEVICE,
        index=0,
        device_class=BUILT_IN[cls],
        fault=fault,
        connection=0,
        real_inference=False,
        rng=random.Random(0),
    )


async def test_a_new_digest_goes_through_every_step_into_the_inactive_slot() -> None:
    dev, world = device(), World()
    await dev.converge(desired(V1, 7), world)
    assert world.steps() == INSTALL
    assert {r.revision for r in world.reported} == {7}
    assert world.reported[-1].slot == "a" and world.reported[-1].active_digest == V1
    assert world.reported[1].progress == ProgressBytes(done=0, total=1000)
    assert dev.active_digest == V1 and dev.previous_digest is None


async def test_the_same_digest_again_is_active_at_once() -> None:
    dev, world = device(), World()
    await dev.converge(desired(V1, 1), world)
    world.reported.clear()
    await dev.converge(desired(V1, 2), world)
    assert world.steps() == ["active"] and world.url_requests == 1


async def test_the_previous_digest_is_a_switch_back_without_download() -> None:
    dev, world = device(), World()
    await dev.converge(desired(V1, 1), world)
    await dev.converge(desired(V2, 2), world)
    assert dev.slots == {"a": V1, "b": V2} and dev.active == "b"
    world.reported.clear()
    await dev.converge(desired(V1, 3), world)
    assert world.steps() == ["active"]
    assert world.reported[0].slot == "a" and world.reported[0].active_digest == V1
    assert world.url_requests == 2 and dev.previous_digest == V2


async def test_the_device_remembers_the_rollout_wave_its_model_serves_for() -> None:
    dev, world = device(), World(bad_digests={V2})
    rollout = Desired(state=desired_state(V1).model_copy(update={"rollout_id": "r1", "wave": 1}), revision=1)
    served_for = []
    await dev.converge(rollout, world)
    served_for.append(dev.rollout)
    failed = Desired(state=desired_state(V2).model_copy(update={"rollout_id": "r2", "wave": 0}), revision=2)
    await dev.converge(failed, world)
    served_for.append(dev.rollout)  # a model that never served names nothing
    await dev.converge(desired(V1, 3), world)  # the serving digest, now set by hand
    served_for.append(dev.rollout)
    assert served_for == [("r1", 1), ("r1", 1), (None, None)]


async def test_the_device_serves_the_settings_of_its_desired_state_and_reports_their_digest() -> None:
    dev, world = device(), World(bad_digests={V2})
    en, de = {"lang": "en"}, {"lang": "de"}
    await dev.converge(Desired(state=desired_state(V1, config=en), revision=1), world)
    assert dev.config_digest == config_digest(en) and world.reported[-1].config_digest == config_digest(en)
    assert {r.config_digest for r in world.reported[:-1]} == {None}
    world.reported.clear()
    await dev.converge(Desired(state=desired_state(V1, config=de), revision=2), world)  # settings alone
    assert world.steps() == ["active"] and world.url_requests == 1 and dev.config_digest == config_digest(de)
    assert world.reported[0].config_digest == config_digest(de)
    await dev.converge(Desired(state=desired_state(V2, config=en), revision=3), world)  # fails verification
    assert world.reported[-1].step == "failed" and world.reported[-1].config_digest == config_digest(de)
    assert dev.view().config_digest == config_digest(de)


async def test_failed_verification_never_becomes_active_and_keeps_the_previous_model() -> None:
    dev, world = device(), World(bad_digests={V2})
    await dev.converge(desired(V1, 1), world)
    world.reported.clear()
    await dev.converge(desired(V2, 2), world)
    assert world.steps() == ["received", "downloading", "downloaded", "verifying", "failed"]
    assert "sha256 mismatch" in (world.reported[-1].reason or "")
    assert dev.active_digest == V1 and dev.slot_with(V2) is None


async def test_a_download_that_always_breaks_fails_after_the_bounded_retries() -> None:
    dev, world = device(Fault.DOWNLOAD_FAIL), World()
    await dev.converge(desired(V1, 1), world)
    downloads = [r for r in world.reported if r.step == "downloading" and r.progress and r.progress.done == 0]
    assert [r.attempt for r in downloads] == [1, 2, 3]
    assert world.steps()[-1] == "failed" and "active" not in world.steps()
    assert "did not complete after 3 attempts" in (world.reported[-1].reason or "")
    assert world.slept >= 0.5 + 1.0  # back-off 0.5 s, then 1 s
    assert dev.active_digest is None


async def test_a_flaky_link_succeeds_on_the_retry() -> None:
    dev, world = device(Fault.FLAKY), World()
    await dev.converge(desired(V1, 1), world)
    assert world.steps()[-1] == "active"
    assert world.reported[-1].attempt == 2


async def test_a_slow_link_reports_progress_as_it_crawls() -> None:
    dev, world = device(Fault.SLOW, cls="gateway"), World()
    await dev.converge(desired(V1, 1, size=1_000_000), world)  # ~19 s at a tenth of 0.5 MiB/s
    progress = [r.progress.done for r in world.reported if r.step == "downloading" and r.progress]
    assert len(progress) == 10 and progress == sorted(progress) and progress[-1] < 1_000_000
    assert world.slept > 15
    assert world.steps()[-1] == "active"


@pytest.mark.parametrize("crash_step", ["downloading", "verified", "loading", "smoke_testing"])
async def test_a_crash_mid_install_leaves_the_previous_model_serving(crash_step: InstallStep) -> None:
    dev, world = device(Fault.CRASH), World()
    dev.crash_step = None
    await dev.converge(desired(V1, 1), world)
    dev.crash_step = crash_step
    with pytest.raises(DeviceCrashed) as crashed:
        await dev.converge(desired(V2, 2), world)
    assert crashed.value.step == crash_step
    assert dev.active_digest == V1
    world.reported.clear()
    await dev.converge(desired(V2, 2), world)  # after the restart: crashes only once
    assert world.steps() == INSTALL and dev.active_digest == V2


async def test_a_registry_refusal_fails_at_once_without_retrying() -> None:
    dev, world = device(), World(url_errors=[NotFound("no artifact has that digest")])
    await dev.converge(desired(V1, 1), world)
    assert world.steps() == ["received", "failed"] and world.url_requests == 1
    assert "the registry refused a download URL" in (world.reported[-1].reason or "")
    assert world.slept == 0.0


async def test_a_registry_that_does_not_answer_costs_an_attempt_and_is_retried() -> None:
    dev, world = device(), World(url_errors=[BusError("registry did not answer download_url within 10s")])
    await dev.converge(desired(V1, 1), world)
    assert world.steps()[-1] == "active" and world.reported[-1].attempt == 2
    assert world.url_requests == 2 and world.slept >= 0.5
