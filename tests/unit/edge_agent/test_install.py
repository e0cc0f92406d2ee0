"""The install state machine: decisions as tables, then its steps and seam calls against a recording device."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from services.edge_agent.desired import Desired
from services.edge_agent.errors import DownloadFailed, LoadFailed, VerificationFailed
from services.edge_agent.install import Plan, Progress, RetryPolicy, Slots, converge, download, plan
from shared.bus import BusError
from shared.errors import NotFound, SlmopsError
from shared.messages.common import config_digest
from shared.messages.device import DesiredState, DeviceStatus, InstallStep, ProgressBytes, Slot
from shared.messages.registry import DownloadUrl
from tests.unit.edge_agent.conftest import DEVICE, INSTALL, desired, desired_state

X, Y, Z = "1" * 64, "2" * 64, "3" * 64
SIZE = 1000
POLICY = RetryPolicy(attempts=3, backoff=0.5)


@dataclass
class RecordingDevice:
    """`InstallIO[str]` that records every seam call; outcomes are set per test."""

    slots_now: Slots = field(default_factory=lambda: Slots(active=None, contents={"a": None, "b": None}))
    device_id: str = DEVICE
    statuses: list[DeviceStatus] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    slept: list[float] = field(default_factory=list)
    have: int = 0
    url_errors: list[Exception] = field(default_factory=list)
    transfers: list[int | Exception] = field(default_factory=list)  # per attempt; default: all bytes
    verify_error: Exception | None = None
    load_error: Exception | None = None
    configs: list[str | None] = field(default_factory=list)  # the settings' digest each switch or keep got

    async def report(self, status: DeviceStatus) -> None:
        self.statuses.append(status)

    async def slots(self) -> Slots:
        return self.slots_now

    async def download_url(self, digest: str) -> DownloadUrl:
        self.calls.append("url")
        if self.url_errors:
            raise self.url_errors.pop(0)
        return DownloadUrl(url="http://s3/x", digest=digest, size_bytes=SIZE, signature="sig", expires_in_seconds=300)

    async def held(self, digest: str, *, size: int) -> int:
        return self.have

    async def transfer(self, url: DownloadUrl, *, attempt: int, have: int, size: int, progress: Progress) -> int:
        self.calls.append(f"transfer:{attempt}")
        outcome = self.transfers.pop(0) if self.transfers else size
        if isinstance(outcome, Exception):
            raise outcome
        for done in range(have + 100, outcome + 1, 100):
            await progress.update(done)
        return outcome

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    async def verify(self, desired: DesiredState) -> None:
        self.calls.append("verify")
        if self.verify_error:
            raise self.verify_error

    async def discard(self, digest: str) -> None:
        self.calls.append("discard")

    async def clear(self, slot: Slot) -> None:
        self.calls.append(f"clear:{slot}")

    async def place(self, slot: Slot, desired: DesiredState) -> None:
        self.calls.append(f"place:{slot}")

    async def load(self, slot: Slot, desired: DesiredState) -> str:
        self.calls.append(f"load:{slot}")
        if self.load_error:
            raise self.load_error
        return desired.digest

    async def smoke(self, loaded: str, desired: DesiredState, *, may_download: bool) -> None:
        self.calls.append("smoke" if may_download else "smoke:no-download")

    async def switch(self, slot: Slot, loaded: str, desired: DesiredState, *, config_digest: str | None) -> None:
        self.calls.append(f"switch:{slot}")
        self.configs.append(config_digest)

    async def keep(self, slot: Slot, desired: DesiredState, *, config_digest: str | None) -> None:
        self.calls.append(f"keep:{slot}")
        self.configs.append(config_digest)

    def steps(self) -> list[InstallStep]:
        return [s.step for s in self.statuses]


def serving(active: Slot | None, a: str | None, b: str | None) -> Slots:
    return Slots(active=active, contents={"a": a, "b": b})


@pytest.mark.parametrize(
    ("slots", "digest", "expected"),
    [
        (serving(None, None, None), X, Plan(action="install", slot="a")),
        (serving("a", X, None), X, Plan(action="keep", slot="a")),
        (serving("a", X, None), Y, Plan(action="install", slot="b")),
        (serving("a", X, Y), Y, Plan(action="switch", slot="b")),
        (serving("b", X, Y), X, Plan(action="switch", slot="a")),
        (serving("b", X, Y), Z, Plan(action="install", slot="a")),
        (serving(None, X, None), X, Plan(action="switch", slot="a")),
    ],
)
def test_plan_follows_the_local_slots(slots: Slots, digest: str, expected: Plan) -> None:
    assert plan(slots, digest) == expected


@pytest.mark.parametrize(("attempt", "seconds"), [(1, 0.0), (2, 0.5), (3, 1.0), (4, 2.0)])
def test_back_off_doubles_from_the_second_attempt(attempt: int, seconds: float) -> None:
    assert POLICY.delay(attempt) == seconds


@dataclass
class Attempts:
    """`ProgressSink` that notes the attempt of each progress it is told."""

    attempts: list[int] = field(default_factory=list)

    async def downloading(self, attempt: int, progress: ProgressBytes) -> None:
        self.attempts.append(attempt)


@pytest.mark.parametrize(
    ("start", "counts", "due"),
    [
        (0, [50, 100, 150, 250, 999, 1000], [False, True, False, True, True, False]),
        (400, [450, 500, 1000], [False, True, False]),
        (0, [1000], [False]),  # the end is `downloaded`'s to say
    ],
)
def test_progress_is_due_after_another_tenth_and_never_at_the_end(
    start: int, counts: list[int], due: list[bool]
) -> None:
    progress = Progress(Attempts(), attempt=1, start=start, total=1000)
    assert [progress.due(done) for done in counts] == due


async def test_a_new_digest_goes_through_every_step_and_only_the_switch_changes_what_serves() -> None:
    dev = RecordingDevice(slots_now=serving("a", X, None))
    await converge(desired(Z, 5), dev, policy=POLICY)
    assert [s for s in dev.steps() if s != "downloading"] == [s for s in INSTALL if s != "downloading"]
    assert dev.calls == ["url", "transfer:1", "verify", "clear:b", "place:b", "load:b", "smoke", "switch:b"]
    assert {s.desired_revision for s in dev.statuses} == {5}
    assert all(s.active_digest == X for s in dev.statuses[:-1]) and dev.statuses[-1].active_digest == Z
    assert [s.slot for s in dev.statuses if s.step in ("loading", "smoke_testing", "active")] == ["b", "b", "b"]


async def test_downloading_reports_the_start_then_every_tenth() -> None:
    dev = RecordingDevice()
    await converge(desired(Z, 5), dev, policy=POLICY)
    progress = [s.progress.done for s in dev.statuses if s.step == "downloading" and s.progress]
    assert progress == [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]


async def test_the_serving_digest_is_active_at_once() -> None:
    dev = RecordingDevice(slots_now=serving("b", X, Z))
    await converge(desired(Z, 5), dev, policy=POLICY)
    assert dev.steps() == ["active"] and dev.calls == ["keep:b"]
    assert dev.statuses[0].slot == "b" and dev.statuses[0].active_digest == Z


async def test_the_digest_in_the_other_slot_is_a_switch_without_download() -> None:
    dev = RecordingDevice(slots_now=serving("b", X, Y))
    await converge(desired(X, 5), dev, policy=POLICY)
    assert dev.steps() == ["active"] and dev.calls == ["load:a", "smoke:no-download", "switch:a"]
    assert dev.statuses[0].slot == "a" and dev.statuses[0].active_digest == X


async def test_bytes_that_fail_verification_are_discarded_and_never_placed() -> None:
    dev = RecordingDevice(slots_now=serving("a", X, None), verify_error=VerificationFailed("sha256 mismatch: ..."))
    await converge(desired(Z, 5), dev, policy=POLICY)
    assert dev.steps()[-2:] == ["verifying", "failed"] and "sha256 mismatch" in (dev.statuses[-1].reason or "")
    assert dev.calls[-2:] == ["verify", "discard"] and dev.statuses[-1].active_digest == X


async def test_a_load_failure_leaves_the_slot_cleared_and_the_previous_model_serving() -> None:
    dev = RecordingDevice(slots_now=serving("a", X, Y), load_error=LoadFailed("onnxruntime cannot load the model"))
    await converge(desired(Z, 5), dev, policy=POLICY)
    assert dev.calls[-3:] == ["clear:b", "place:b", "load:b"]
    assert dev.steps()[-2:] == ["loading", "failed"] and dev.statuses[-1].active_digest == X


async def test_a_registry_refusal_fails_at_once() -> None:
    dev = RecordingDevice(url_errors=[NotFound("no such digest")])
    await converge(desired(Z, 5), dev, policy=POLICY)
    assert dev.steps() == ["received", "failed"] and dev.calls == ["url"] and dev.slept == []
    assert "the registry refused a download URL" in (dev.statuses[-1].reason or "")


async def test_a_registry_that_does_not_answer_is_a_failed_attempt() -> None:
    dev = RecordingDevice(url_errors=[BusError("registry did not answer")])
    await converge(desired(Z, 5), dev, policy=POLICY)
    assert dev.steps()[-1] == "active" and dev.statuses[-1].attempt == 2
    assert dev.calls[:3] == ["url", "url", "transfer:2"] and dev.slept == [0.5]


async def test_broken_and_short_transfers_are_retried_then_fail_with_the_last_reason() -> None:
    dev = RecordingDevice(transfers=[DownloadFailed("connection reset"), 300, 400])
    await converge(desired(Z, 5), dev, policy=POLICY)
    starts = [s.attempt for s in dev.statuses if s.step == "downloading" and s.progress and s.progress.done == 0]
    assert starts == [1, 2, 3] and dev.slept == [0.5, 1.0]
    assert dev.steps()[-1] == "failed" and "active" not in dev.steps()
    assert dev.statuses[-1].reason == (
        "download did not complete after 3 attempts: the transfer ended after 400 of 1000 bytes"
    )


async def test_the_download_gives_up_after_bounded_attempts_and_counts_url_failures() -> None:
    dev = RecordingDevice(url_errors=[BusError("registry did not answer")], transfers=[10, 10, 10])
    started = Attempts()
    with pytest.raises(DownloadFailed, match="did not complete after 3 attempts"):
        await download(dev, Z, size=SIZE, policy=POLICY, on_progress=started)
    assert started.attempts == [2, 3] and dev.calls.count("url") == 3


async def test_a_complete_partial_download_needs_no_request() -> None:
    dev = RecordingDevice(have=SIZE)
    await converge(desired(Z, 5), dev, policy=POLICY)
    assert "url" not in dev.calls and dev.steps() == INSTALL
    assert dev.statuses[1].progress == ProgressBytes(done=SIZE, total=SIZE)


async def test_a_registry_that_does_not_answer_after_the_download_fails_the_install() -> None:
    dev = RecordingDevice(verify_error=BusError("registry did not answer public_key"))
    await converge(desired(Z, 5), dev, policy=POLICY)
    assert dev.steps()[-1] == "failed"
    assert dev.statuses[-1].reason == "cannot reach the registry: registry did not answer public_key"


async def test_programming_errors_propagate() -> None:
    dev = RecordingDevice(load_error=KeyError("a bug"))
    with pytest.raises(KeyError):
        await converge(desired(Z, 5), dev, policy=POLICY)


async def test_a_registry_that_fails_during_the_install_ends_it_as_failed() -> None:
    """Not a refusal, not an outage: the registry answered `internal`. The install still ends, with a status."""
    dev = RecordingDevice(verify_error=SlmopsError("registry failed on public_key: RuntimeError"))
    await converge(desired(X, 3), dev, policy=POLICY)
    assert dev.steps()[-1] == "failed"
    assert dev.statuses[-1].reason == "the registry failed: registry failed on public_key: RuntimeError"


OLD_SETTINGS, NEW_SETTINGS = {"lang": "en"}, {"lang": "de", "limits": {"max_tokens": 64}}


def with_settings(digest: str, revision: int, config: dict[str, object] | None) -> Desired:
    return Desired(state=desired_state(digest, config=config), revision=revision)


async def test_every_status_names_the_settings_serving_after_its_step() -> None:
    dev = RecordingDevice(
        slots_now=Slots(active="a", contents={"a": X, "b": None}, config_digest=config_digest(OLD_SETTINGS))
    )
    await converge(with_settings(Z, 5, NEW_SETTINGS), dev, policy=POLICY)
    assert dev.steps()[-1] == "active" and dev.configs == [config_digest(NEW_SETTINGS)]
    assert {s.config_digest for s in dev.statuses[:-1]} == {config_digest(OLD_SETTINGS)}, "until the switch"
    assert dev.statuses[-1].config_digest == config_digest(NEW_SETTINGS)


async def test_new_settings_for_the_serving_digest_are_kept_in_place_without_a_download() -> None:
    dev = RecordingDevice(
        slots_now=Slots(active="b", contents={"a": X, "b": Z}, config_digest=config_digest(OLD_SETTINGS))
    )
    await converge(with_settings(Z, 6, NEW_SETTINGS), dev, policy=POLICY)
    assert dev.steps() == ["active"] and dev.calls == ["keep:b"] and dev.configs == [config_digest(NEW_SETTINGS)]
    assert dev.statuses[0].config_digest == config_digest(NEW_SETTINGS)


async def test_settings_dropped_are_reported_as_none_and_a_failed_install_reports_the_old_ones() -> None:
    dev = RecordingDevice(
        slots_now=Slots(active="b", contents={"a": X, "b": Z}, config_digest=config_digest(OLD_SETTINGS))
    )
    await converge(with_settings(Z, 6, None), dev, policy=POLICY)
    assert dev.configs == [None] and dev.statuses[-1].config_digest is None
    failing = RecordingDevice(
        slots_now=Slots(active="a", contents={"a": X, "b": None}, config_digest=config_digest(OLD_SETTINGS)),
        load_error=LoadFailed("onnxruntime cannot load the model"),
    )
    await converge(with_settings(Z, 7, NEW_SETTINGS), failing, policy=POLICY)
    assert failing.steps()[-1] == "failed" and failing.statuses[-1].config_digest == config_digest(OLD_SETTINGS)


def test_a_desired_state_s_settings_digest_is_computed_once_unless_given() -> None:
    assert with_settings(Z, 1, NEW_SETTINGS).config_digest == config_digest(NEW_SETTINGS)
    assert with_settings(Z, 1, None).config_digest is None
    given = Desired(state=desired_state(Z, config=NEW_SETTINGS), revision=1, config_digest="f" * 64)
    assert given.config_digest == "f" * 64
