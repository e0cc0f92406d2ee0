"""The real agent on a link in memory: it follows the desired state, installs, serves, says hello."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from opentelemetry.trace import Tracer

from services.edge_agent.adapters.memory import MemoryLink, Offer
from services.edge_agent.agent import Agent, AgentConfig
from services.edge_agent.capabilities import detect
from services.edge_agent.telemetry import LATENCY_SCALE, REFERENCE_REQUESTS
from shared.errors import NotFound
from shared.messages.common import config_digest
from shared.messages.device import DeviceStatus, TelemetryWindow
from tests.unit.edge_agent.conftest import DEVICE, want

INPUTS = {"input_ids": np.array([[5, 6, 7, 8]], dtype=np.int64), "attention_mask": np.ones((1, 4), np.int64)}


@contextlib.asynccontextmanager
async def running(
    link: MemoryLink, tmp_path: Path, *, tracer: Tracer | None = None, **config: Any
) -> AsyncIterator[Agent]:
    """An agent on the in-memory link, running until the block ends (its spans to `tracer`, if given)."""
    settings = AgentConfig(
        device_id=DEVICE,
        device_class="rpi5",
        registry_key_pem=link.public_key_pem,
        state_dir=tmp_path / "state",
        download_backoff=0.0,
        **config,
    )
    agent = Agent(settings, link=link, capabilities=detect(), tracer=tracer)
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def agent(link: MemoryLink, tmp_path: Path) -> AsyncIterator[Agent]:
    async with running(link, tmp_path) as agent:
        yield agent


def settled(revision: int) -> Callable[[list[DeviceStatus]], bool]:
    return lambda statuses: any(s.desired_revision == revision and s.step in ("active", "failed") for s in statuses)


def steps_of(link: MemoryLink, revision: int) -> list[str]:
    return [s.step for s in link.statuses if s.desired_revision == revision]


async def test_the_agent_installs_serves_and_says_hello_with_the_new_model(
    agent: Agent, link: MemoryLink, v1: Offer
) -> None:
    revision = link.desire(want(v1))
    await link.wait_for(settled(revision))
    assert steps_of(link, revision)[-1] == "active" and agent.active_digest == v1.digest
    digest, outputs = agent.infer(INPUTS)
    assert digest == v1.digest and outputs[0].shape == (1, 64)
    assert link.hellos[0].active_digest is None and link.hellos[-1].active_digest == v1.digest


async def test_a_newer_revision_cancels_the_install_in_progress(
    agent: Agent, link: MemoryLink, v1: Offer, v2: Offer
) -> None:
    held = link.hold(v1.digest)
    first = link.desire(want(v1))
    await link.wait_for(lambda statuses: v1.digest in link.url_requests)
    second = link.desire(want(v2))
    await link.wait_for(settled(second))
    held.set()
    assert steps_of(link, first) == ["received"], "the abandoned install reports nothing more"
    assert steps_of(link, second)[-1] == "active" and agent.active_digest == v2.digest


async def test_an_unknown_digest_fails_at_once(agent: Agent, link: MemoryLink, v1: Offer) -> None:
    link.fail_next_urls(NotFound("no registered artifact has that digest"))
    revision = link.desire(want(v1))
    await link.wait_for(settled(revision))
    assert steps_of(link, revision) == ["received", "failed"] and link.url_requests == [v1.digest]
    assert agent.active_digest is None


async def test_the_same_digest_again_is_active_without_a_download(agent: Agent, link: MemoryLink, v1: Offer) -> None:
    await link.wait_for(settled(link.desire(want(v1))))
    again = link.desire(want(v1))
    await link.wait_for(settled(again))
    assert steps_of(link, again) == ["active"] and link.url_requests == [v1.digest]


async def test_new_settings_alone_apply_without_a_download_and_survive_a_restart(
    link: MemoryLink, tmp_path: Path, v1: Offer
) -> None:
    async with running(link, tmp_path) as agent:
        await link.wait_for(settled(link.desire(want(v1, config={"lang": "en"}))))
        again = link.desire(want(v1, config={"lang": "de"}))
        await link.wait_for(settled(again))
        assert steps_of(link, again) == ["active"] and link.url_requests == [v1.digest]
        assert agent.app_config.values == {"lang": "de"}
        assert [s.config_digest for s in link.statuses if s.desired_revision == again] == [
            config_digest({"lang": "de"})
        ]
    hellos = len(link.hellos)
    async with running(link, tmp_path) as restarted:
        async with asyncio.timeout(10):
            while len(link.hellos) == hellos:  # the first hello follows loading the active slot
                await asyncio.sleep(0.01)
        assert restarted.app_config.values == {"lang": "de"}
        assert link.hellos[-1].config_digest == config_digest({"lang": "de"}), "the hello names them too"


@pytest.fixture
async def windowed(link: MemoryLink, tmp_path: Path) -> AsyncIterator[Agent]:
    """An agent that closes a telemetry window every 0.1 s."""
    async with running(link, tmp_path, telemetry_seconds=0.1) as agent:
        yield agent


async def serve_a_window(agent: Agent, link: MemoryLink, requests: int) -> TelemetryWindow:
    """Run `requests` inferences (different inputs each), then wait for the window that holds them."""
    before = sum(w.request_count for w in link.windows)
    rng = np.random.default_rng(before)
    for _ in range(requests):
        agent.infer({"input_ids": rng.integers(1, 1000, (1, 8)), "attention_mask": np.ones((1, 8), np.int64)})
    async with asyncio.timeout(10):
        while sum(w.request_count for w in link.windows) < before + requests:
            await asyncio.sleep(0.02)
    window = next(w for w in reversed(link.windows) if w.request_count)  # empty windows may follow it
    assert window.request_count == requests, "the requests landed in one window"
    return window


async def test_windows_carry_the_class_the_rollout_wave_and_similarity_once_the_reference_is_built(
    windowed: Agent, link: MemoryLink, v1: Offer
) -> None:
    await link.wait_for(settled(link.desire(want(v1, rollout_id="r1", wave=2))))
    first, second, third = [await serve_a_window(windowed, link, 40) for _ in range(3)]
    assert (first.device_class, first.rollout_id, first.wave) == ("rpi5", "r1", 2)
    assert first.similarity is None  # its 40 requests went into the reference
    assert second.similarity is not None and sum(second.similarity.counts) == 2 * 40 - REFERENCE_REQUESTS
    assert third.similarity is not None and sum(third.similarity.counts) == 40  # the same reference, across windows
    assert third.similarity.reference_requests == REFERENCE_REQUESTS
    assert third.latency.scale == LATENCY_SCALE and third.outputs["norm"].count == 40


async def test_the_same_digest_set_by_hand_is_reported_as_by_hand(windowed: Agent, link: MemoryLink, v1: Offer) -> None:
    await link.wait_for(settled(link.desire(want(v1, rollout_id="r1", wave=0))))
    assert (await serve_a_window(windowed, link, 3)).rollout_id == "r1"
    await link.wait_for(settled(link.desire(want(v1))))  # kept: no install, but another desired state
    window = await serve_a_window(windowed, link, 3)  # the window open under r1 closed at the keep
    assert (window.rollout_id, window.wave) == (None, None)


async def test_a_keep_for_another_desired_state_closes_the_window_opened_under_the_old_one(
    link: MemoryLink, tmp_path: Path, v1: Offer
) -> None:
    """The serving digest kept for another desired state (here: by hand after a rollout's wave) is
    a new window at once, not at the next tick: no window names r1 for a request served after the keep."""
    async with running(link, tmp_path, telemetry_seconds=60.0, first_window_seconds=60.0) as agent:  # no tick
        await link.wait_for(settled(link.desire(want(v1, rollout_id="r1", wave=0))))
        for _ in range(3):
            agent.infer(INPUTS)
        await link.wait_for(settled(link.desire(want(v1))))
        assert [(w.rollout_id, w.wave, w.request_count) for w in link.windows] == [("r1", 0, 3)]
        for _ in range(2):
            agent.infer(INPUTS)
        again = link.desire(want(v1))  # the same desired state again: the window stays open
        await link.wait_for(settled(again))
        agent.infer(INPUTS)
        assert len(link.windows) == 1
    assert [(w.rollout_id, w.wave, w.request_count) for w in link.windows] == [("r1", 0, 3), (None, None, 3)]


async def test_a_new_model_s_first_window_closes_within_a_second_however_long_windows_are(
    link: MemoryLink, tmp_path: Path, v1: Offer
) -> None:
    """A rollout counts a device healthy once a window on the new model arrives: it should not wait a
    whole window (60 s here) to hear that the device serves."""
    async with running(link, tmp_path, telemetry_seconds=60.0, first_window_seconds=0.2) as agent:
        await link.wait_for(settled(link.desire(want(v1, rollout_id="r1", wave=0))))
        agent.infer(INPUTS)
        for _ in range(100):
            if link.windows:
                break
            await asyncio.sleep(0.05)
        (window,) = link.windows
        assert (window.rollout_id, window.wave, window.request_count) == ("r1", 0, 1)
        assert (window.window_end - window.window_start).total_seconds() < 5
