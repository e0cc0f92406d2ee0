"""The state machine over the agent's real seams: slots on disk, real transfers, onnxruntime, no server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from samples.tiny import write_sample
from services.edge_agent.adapters.memory import MemoryLink, Offer
from services.edge_agent.desired import AppConfig, Desired
from services.edge_agent.install import RetryPolicy, converge, download
from services.edge_agent.local_install import LocalInstall
from services.edge_agent.runtime import LoadedModel, ModelRuntime
from services.edge_agent.slots import SlotStore
from shared import signing
from shared.bus import BusError
from shared.messages.common import config_digest
from shared.messages.device import InstallStep, Slot, SmokeInput
from tests.unit.edge_agent.conftest import INSTALL, want

POLICY = RetryPolicy(attempts=3, backoff=0.0)


class Device:
    """A real device's install seams in a temporary directory, and what they served."""

    def __init__(self, link: MemoryLink, root: Path) -> None:
        self.link = link
        self.store = SlotStore(root)
        self.runtime = ModelRuntime()
        self.served: list[tuple[str, str | None]] = []
        self.installer = LocalInstall(
            link=link,
            store=self.store,
            runtime=self.runtime,
            serve=self.serve,
            policy=POLICY,
            registry_key_pem=link.public_key_pem,
        )
        self._revision = 0

    async def serve(self, loaded: LoadedModel, shadow: LoadedModel | None, config: AppConfig) -> None:
        self.runtime.swap(loaded, shadow=shadow, config=config)
        self.served.append((loaded.digest, shadow.digest if shadow else None))

    async def converge(self, offer: Offer, **overrides: object) -> list[InstallStep]:
        """Install `offer` as the next revision; the steps reported for it."""
        self._revision += 1
        await converge(Desired(state=want(offer, **overrides), revision=self._revision), self.installer, policy=POLICY)
        return [s.step for s in self.link.statuses if s.desired_revision == self._revision]

    def state(self) -> dict[str, object]:
        return dict(json.loads((self.store.root / "state.json").read_text()))


@pytest.fixture
def device(link: MemoryLink, tmp_path: Path) -> Device:
    return Device(link, tmp_path / "device")


async def test_install_places_the_model_in_a_slot_and_commits_it_active(device: Device, v1: Offer) -> None:
    steps = await device.converge(v1)
    assert [s for s in steps if s != "downloading"] == [s for s in INSTALL if s != "downloading"]
    assert device.state()["active"] == "a" and device.store.load().view().active_digest == v1.digest
    assert device.store.model_path("a").read_bytes() == v1.path.read_bytes()
    assert device.served == [(v1.digest, None)] and not device.store.partial_download(v1.digest).exists()


async def test_tampered_bytes_are_refused_and_deleted(device: Device, v1: Offer, v2: Offer) -> None:
    await device.converge(v1)
    v2.path.write_bytes(bytes(b ^ 0xFF for b in v2.path.read_bytes()))  # same size, other bytes
    steps = await device.converge(v2)
    assert steps[-1] == "failed" and "sha256 mismatch" in (device.link.statuses[-1].reason or "")
    assert device.store.load().view().active_digest == v1.digest
    assert not device.store.partial_download(v2.digest).exists()


async def test_a_signature_the_registry_did_not_make_is_refused(device: Device, v1: Offer, tmp_path: Path) -> None:
    forged = signing.sign_digest(signing.load_or_create_private_key(tmp_path / "forger.pem"), v1.digest)
    steps = await device.converge(v1, signature=forged)
    assert steps[-2:] == ["verifying", "failed"] and "signature" in (device.link.statuses[-1].reason or "")
    assert device.store.load().view().active_digest is None and device.served == []


async def test_rolling_back_to_the_kept_slot_needs_no_download(device: Device, v1: Offer, v2: Offer) -> None:
    await device.converge(v1)
    await device.converge(v2)
    requests = len(device.link.url_requests)
    assert await device.converge(v1) == ["active"]
    assert len(device.link.url_requests) == requests and device.state()["active"] == "a"
    assert device.link.statuses[-1].slot == "a" and device.served[-1] == (v1.digest, None)


async def test_a_rollback_never_downloads_even_a_smoke_input_it_no_longer_has(
    device: Device, v1: Offer, v2: Offer, tmp_path: Path
) -> None:
    """Revert must work with the registry out of reach: a missing smoke input becomes a synthetic one."""
    eval_set = tmp_path / "eval.npz"
    write_sample(tmp_path / "sample")[1].rename(eval_set)
    smoke = device.link.offer(eval_set)
    named = SmokeInput(digest=smoke.digest, size_bytes=smoke.size_bytes)
    await device.converge(v1, smoke_input=named)
    await device.converge(v2)
    (device.store.downloads / f"{smoke.digest}.npz").unlink()
    requests = len(device.link.url_requests)
    device.link.fail_next_urls(BusError("the registry is unreachable"))
    assert await device.converge(v1, smoke_input=named) == ["active"]
    assert len(device.link.url_requests) == requests and device.served[-1] == (v1.digest, None)


async def test_a_model_that_does_not_load_leaves_its_slot_cleared_and_the_previous_one_active(
    device: Device, v1: Offer, v2: Offer, tmp_path: Path
) -> None:
    await device.converge(v1)
    await device.converge(v2)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    steps = await device.converge(device.link.offer(junk))
    assert steps[-2:] == ["loading", "failed"] and "cannot load" in (device.link.statuses[-1].reason or "")
    slots = device.state()["slots"]
    assert isinstance(slots, dict) and slots["a"] is None, "cleared durably before it was overwritten"
    assert device.store.load().view().active_digest == v2.digest


async def test_the_named_smoke_input_is_fetched_checked_and_kept(device: Device, v1: Offer, tmp_path: Path) -> None:
    _, eval_set = write_sample(tmp_path / "eval", seed=1)
    smoke = device.link.offer(eval_set)
    steps = await device.converge(v1, smoke_input=SmokeInput(digest=smoke.digest, size_bytes=smoke.size_bytes))
    assert steps[-1] == "active" and (device.store.downloads / f"{smoke.digest}.npz").exists()


async def test_a_smoke_input_with_other_bytes_fails_the_install(device: Device, v1: Offer, tmp_path: Path) -> None:
    _, eval_set = write_sample(tmp_path / "eval", seed=1)
    smoke = device.link.offer(eval_set)
    eval_set.write_bytes(bytes(b ^ 0xFF for b in eval_set.read_bytes()))
    steps = await device.converge(v1, smoke_input=SmokeInput(digest=smoke.digest, size_bytes=smoke.size_bytes))
    assert steps[-2:] == ["smoke_testing", "failed"]
    assert "smoke input sha256 mismatch" in (device.link.statuses[-1].reason or "")
    assert device.store.load().view().active_digest is None


async def test_downloads_give_up_after_bounded_attempts_and_count_url_failures(device: Device, v1: Offer) -> None:
    device.link.fail_next_urls(BusError("registry did not answer"))
    v1.path.unlink()  # every URL the link hands out now points at nothing
    steps = await device.converge(v1)
    assert steps[-1] == "failed" and "did not complete after 3 attempts" in (device.link.statuses[-1].reason or "")
    assert device.link.url_requests == [v1.digest] * 3


async def test_a_complete_partial_download_needs_no_request(device: Device, v1: Offer) -> None:
    device.store.partial_download(v1.digest).write_bytes(v1.path.read_bytes())
    assert await download(device.installer, v1.digest, size=v1.size_bytes, policy=POLICY) == 1
    assert device.link.url_requests == []


async def test_the_serving_digest_again_turns_shadow_mode_on_and_off(device: Device, v1: Offer, v2: Offer) -> None:
    await device.converge(v1)
    await device.converge(v2)
    assert await device.converge(v2, shadow=True) == ["active"]
    active, shadow = device.runtime.current()
    assert active is not None and active.digest == v2.digest and shadow is not None and shadow.digest == v1.digest
    await device.converge(v2, shadow=False)
    assert device.runtime.current()[1] is None


async def test_a_keep_for_another_desired_state_relabels_after_the_commit(link: MemoryLink, tmp_path: Path) -> None:
    """The agent closes the window opened under the old labels once the new ones are durable, and
    only when they changed (the same desired state again leaves the window open)."""
    device = Device(link, tmp_path / "device")
    seen: list[tuple[object, object]] = []

    async def relabel() -> None:
        content = device.store.load().active_content
        assert content is not None
        seen.append((content.rollout_id, content.wave))

    device.installer._relabel = relabel
    model, _ = write_sample(tmp_path / "m", seed=1)
    offer = link.offer(model)
    await device.converge(offer, rollout_id="r1", wave=0)
    assert seen == []  # a switch is `serve`'s to announce
    await device.converge(offer, rollout_id="r1", wave=1)
    await device.converge(offer, rollout_id="r1", wave=1)
    await device.converge(offer)
    assert seen == [("r1", 1), (None, None)]


async def test_a_cancel_during_the_switch_waits_for_the_runtime_to_serve_what_the_state_names(
    device: Device, v1: Offer, v2: Offer
) -> None:
    """A newer revision cancels the install while `serve` is publishing the old window: the switch
    still completes, so the runtime serves the digest (and slot labels) the state file names."""
    await device.converge(v1)
    publishing, release = asyncio.Event(), asyncio.Event()
    plain = device.serve

    async def slow_serve(loaded: LoadedModel, shadow: LoadedModel | None, config: AppConfig) -> None:
        publishing.set()
        await release.wait()  # the old model's window on its way to the bus
        await plain(loaded, shadow, config)

    device.installer._serve = slow_serve
    install = asyncio.create_task(
        converge(Desired(state=want(v2, rollout_id="r1", wave=0), revision=9), device.installer, policy=POLICY)
    )
    await asyncio.wait_for(publishing.wait(), timeout=10)
    install.cancel()
    await asyncio.sleep(0.01)
    assert not install.done(), "the cancel waits for the switch"
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await install
    active, _ = device.runtime.current()
    state = device.store.load()
    assert active is not None and state.active_content is not None
    assert active.digest == state.active_content.digest == v2.digest
    assert not any(s.desired_revision == 9 and s.step == "active" for s in device.link.statuses)


SETTINGS_EN, SETTINGS_DE = {"lang": "en"}, {"lang": "de", "limits": {"max_tokens": 64}}


def settings_in(device: Device, slot: Slot) -> object:
    path = device.store.config_path(slot)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


async def test_the_settings_are_stored_beside_the_model_and_serve_with_it(device: Device, v1: Offer) -> None:
    assert (await device.converge(v1, config=SETTINGS_EN))[-1] == "active"
    assert settings_in(device, "a") == SETTINGS_EN and not device.store.config_path("a").with_suffix(".tmp").exists()
    assert device.runtime.app_config() == AppConfig(values=SETTINGS_EN, digest=config_digest(SETTINGS_EN))
    assert device.link.statuses[-1].config_digest == config_digest(SETTINGS_EN)
    assert {s.config_digest for s in device.link.statuses[:-1]} == {None}, "none served before the switch"


async def test_new_settings_for_the_serving_model_apply_without_a_download(device: Device, v1: Offer) -> None:
    await device.converge(v1, config=SETTINGS_EN)
    requests, served = len(device.link.url_requests), list(device.served)
    assert await device.converge(v1, config=SETTINGS_DE) == ["active"]
    assert len(device.link.url_requests) == requests and device.served == served, "no download, no reload"
    assert settings_in(device, "a") == SETTINGS_DE and device.runtime.app_config().values == SETTINGS_DE
    assert device.link.statuses[-1].config_digest == config_digest(SETTINGS_DE)
    assert await device.converge(v1) == ["active"]
    assert settings_in(device, "a") is None and device.runtime.app_config() == AppConfig()
    assert device.link.statuses[-1].config_digest is None


async def test_a_rollback_switches_the_settings_back_with_the_model(device: Device, v1: Offer, v2: Offer) -> None:
    await device.converge(v1, config=SETTINGS_EN)
    await device.converge(v2, config=SETTINGS_DE)
    assert (settings_in(device, "a"), settings_in(device, "b")) == (SETTINGS_EN, SETTINGS_DE)
    assert device.runtime.app_config().values == SETTINGS_DE
    requests = len(device.link.url_requests)
    assert await device.converge(v1, config=SETTINGS_EN) == ["active"]
    assert len(device.link.url_requests) == requests
    assert device.runtime.app_config().values == SETTINGS_EN and device.link.statuses[-1].config_digest == (
        config_digest(SETTINGS_EN)
    )
    status = (await device.installer.slots()).config_digest
    assert status == config_digest(SETTINGS_EN), "what the next install starts from, read from disk"


async def test_a_slot_cleared_for_a_new_model_loses_the_old_model_s_settings(
    device: Device, v1: Offer, v2: Offer, tmp_path: Path
) -> None:
    await device.converge(v1, config=SETTINGS_EN)
    await device.converge(v2, config=SETTINGS_DE)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    assert (await device.converge(device.link.offer(junk), config={"x": 1}))[-1] == "failed"
    assert settings_in(device, "a") is None, "slot a was cleared for the junk: v1's settings went with v1"
    assert settings_in(device, "b") == SETTINGS_DE and device.runtime.app_config().values == SETTINGS_DE


def test_unreadable_settings_serve_as_none(device: Device) -> None:
    device.store.config_path("a").write_text("{not json", encoding="utf-8")
    assert device.store.config("a") == AppConfig()
    device.store.config_path("a").write_text("[1, 2]", encoding="utf-8")
    assert device.store.config("a") == AppConfig()
