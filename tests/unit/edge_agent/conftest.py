"""A device's world in memory: the link and "registry" (`MemoryLink`), two versions of the tiny model,
and the desired states and step order the tests of the agent and of the simulator share."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from samples.tiny import write_sample
from services.edge_agent.adapters.memory import MemoryLink, Offer
from services.edge_agent.desired import Desired
from shared.messages.device import DesiredState, InstallStep

DEVICE = "dev-1"
# A fresh install, in the protocol's order (docs/DEVICE_PROTOCOL.md section 4).
INSTALL: list[InstallStep] = [
    "received",
    "downloading",
    "downloaded",
    "verifying",
    "verified",
    "loading",
    "smoke_testing",
    "active",
]


@pytest.fixture
def link() -> MemoryLink:
    return MemoryLink(DEVICE)


@pytest.fixture
def v1(link: MemoryLink, tmp_path: Path) -> Offer:
    model, _ = write_sample(tmp_path / "v1", seed=1)
    return link.offer(model)


@pytest.fixture
def v2(link: MemoryLink, tmp_path: Path) -> Offer:
    model, _ = write_sample(tmp_path / "v2", seed=2)
    return link.offer(model)


def desired_state(digest: str, *, size: int = 1000, signature: str = "sig", **overrides: object) -> DesiredState:
    """A desired state naming `digest`, as the rollout service would write it."""
    return DesiredState(
        device_id=DEVICE,
        model="tiny",
        version="1.0",
        digest=digest,
        size_bytes=size,
        signature=signature,
        issued_at=datetime.now(UTC),
    ).model_copy(update=overrides)


def desired(digest: str, revision: int, *, size: int = 1000) -> Desired:
    """`desired_state` at a KV revision."""
    return Desired(state=desired_state(digest, size=size), revision=revision)


def want(offer: Offer, **overrides: object) -> DesiredState:
    """The desired state naming what `offer` serves, with its signature."""
    return desired_state(offer.digest, size=offer.size_bytes, **({"signature": offer.signature} | overrides))
