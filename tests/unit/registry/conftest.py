"""The registry's use cases over its in-memory ports: a service per test, no NATS, no S3."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from samples.tiny import write_sample
from services.registry.adapters.memory import MemoryBlobs, MemoryRecordStore
from services.registry.service import RegistryService

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class TickingClock:
    """A clock that moves one second per reading, so "latest" never depends on the host's timer."""

    def __init__(self) -> None:
        self.readings = 0

    def __call__(self) -> datetime:
        self.readings += 1
        return T0 + timedelta(seconds=self.readings)


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`<seed>/tiny-embedder.onnx` and `<seed>/tiny-embedder-eval.npz` for seeds 0 and 7, written once."""
    root = tmp_path_factory.mktemp("samples")
    for seed in (0, 7):
        write_sample(root / str(seed), seed=seed)
    return root


@pytest.fixture(scope="session")
def model(samples: Path) -> Path:
    return samples / "0" / "tiny-embedder.onnx"


@pytest.fixture(scope="session")
def other_model(samples: Path) -> Path:
    """Same shape as `model`, other weights: other bytes."""
    return samples / "7" / "tiny-embedder.onnx"


@pytest.fixture(scope="session")
def eval_set(samples: Path) -> Path:
    return samples / "0" / "tiny-embedder-eval.npz"


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def blobs() -> MemoryBlobs:
    return MemoryBlobs(presign_ttl=timedelta(seconds=120))


@pytest.fixture
def store() -> MemoryRecordStore:
    return MemoryRecordStore()


@pytest.fixture
def registry(store: MemoryRecordStore, blobs: MemoryBlobs, signing_key: Ed25519PrivateKey) -> RegistryService:
    return RegistryService(store=store, blobs=blobs, signing_key=signing_key, clock=TickingClock())
