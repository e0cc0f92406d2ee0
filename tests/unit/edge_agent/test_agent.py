"""The real agent on a link in memory: it follows the desired state, installs, serves, says hello."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from services.edge_agent.adapters.memory import MemoryLink, Offer
from services.edge_agent.agent import Agent, AgentConfig
from services.edge_agent.capabilities import detect
from shared.errors import NotFound
from shared.messages.device import DeviceStatus
from tests.unit.edge_agent.conftest import DEVICE, want

INPUTS = {"input_ids": np.array([[5, 6, 7, 8]], dtype=np.int64), "attention_mask": np.ones((1, 4), np.int64)}


@pytest.fixture
async def agent(link: MemoryLink, tmp_path: Path) -> AsyncIterator[Agent]:
    config = AgentConfig(
        device_id=DEVICE,
        device_class="rpi5",
        registry_key_pem=link.public_key_pem,
        state_dir=tmp_path / "state",
        download_backoff=0.0,
    )
    agent = Agent(config, link=link, capabilities=detect())
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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
