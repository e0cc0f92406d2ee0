"""The optimizer's in-memory registry (services/optimizer/adapters/memory.py) answers as the registry does."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from services.optimizer.adapters.memory import MemoryBlobs, MemoryRegistry
from services.optimizer.errors import RegistryUnavailable, SourceNotFound
from shared.errors import NotFound
from shared.messages.common import ObjectRef
from shared.messages.registry import Artifact, ModelDetail, ModelVersionRecord, OnnxInfo, RegisterVariant

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STAGED = "incoming/x/v.onnx"
VARIANT_BYTES = b"the variant the optimizer built"


def detail(version: str, *, aliases: list[str] | None = None, age_days: int = 0) -> ModelDetail:
    digest = f"{int(version.split('.')[0]):064x}"
    record = ModelVersionRecord(
        name="tiny",
        version=version,
        artifact=Artifact(digest=digest, size_bytes=1, key=f"blobs/sha256/{digest}", signature="c2ln"),
        onnx=OnnxInfo(ir_version=8, opsets={"": 17}, inputs=[], outputs=[], parameters=0, op_types=[]),
        registered_at=T0 - timedelta(days=age_days),
        command_id=f"cmd-{version}",
    )
    return ModelDetail(version=record, variants=[], aliases=aliases or [])


def variant(version: str) -> RegisterVariant:
    return RegisterVariant(name="tiny", version=version, variant="int8", artifact=ObjectRef(key=STAGED))


@pytest.fixture
def blobs() -> MemoryBlobs:
    store = MemoryBlobs()
    store.put_bytes(STAGED, VARIANT_BYTES)
    return store


@pytest.fixture
def registry(blobs: MemoryBlobs) -> MemoryRegistry:
    return MemoryRegistry(detail("1.0", aliases=["stable"], age_days=2), detail("2.0", age_days=1), blobs=blobs)


@pytest.mark.parametrize(("ref", "version"), [("1.0", "1.0"), ("stable", "1.0"), ("latest", "2.0")])
async def test_a_ref_resolves_like_registry_get(registry: MemoryRegistry, ref: str, version: str) -> None:
    assert (await registry.get_model("tiny", ref)).version.version == version


@pytest.mark.parametrize(("name", "ref"), [("tiny", "9.9"), ("other", "latest")])
async def test_an_unknown_version_is_source_not_found(registry: MemoryRegistry, name: str, ref: str) -> None:
    with pytest.raises(SourceNotFound) as raised:
        await registry.get_model(name, ref)
    assert isinstance(raised.value, NotFound), "the optimizer turns it into optimization.failed"


async def test_a_variant_of_a_known_version_is_applied_and_recorded(registry: MemoryRegistry) -> None:
    outcome = await registry.register_variant(variant("1.0"))
    assert outcome.status == "applied" and outcome.result["variant"] == "int8"
    assert outcome.result["digest"] == hashlib.sha256(VARIANT_BYTES).hexdigest(), "the digest of the bytes it read"
    assert registry.sent == [variant("1.0")]


async def test_the_verdict_names_the_bytes_read_even_if_the_upload_was_replaced(
    registry: MemoryRegistry, blobs: MemoryBlobs
) -> None:
    registry.before_read = lambda cmd: blobs.put_bytes(cmd.artifact.key, b"someone else's model")
    outcome = await registry.register_variant(variant("1.0"))
    assert outcome.result["digest"] == hashlib.sha256(b"someone else's model").hexdigest()


async def test_a_variant_whose_upload_is_missing_is_rejected(registry: MemoryRegistry, blobs: MemoryBlobs) -> None:
    blobs.delete(STAGED)
    outcome = await registry.register_variant(variant("1.0"))
    assert outcome.status == "rejected" and STAGED in (outcome.reason or "")


async def test_a_variant_of_an_unknown_version_or_a_refusal_is_rejected(registry: MemoryRegistry) -> None:
    orphan = await registry.register_variant(variant("9.9"))
    assert orphan.status == "rejected" and "9.9 is not registered" in (orphan.reason or "")
    registry.refusal = "disk full"
    refused = await registry.register_variant(variant("1.0"))
    assert (refused.status, refused.reason) == ("rejected", "disk full")


async def test_an_unavailable_registry_answers_nothing_and_records_nothing(registry: MemoryRegistry) -> None:
    registry.available = False
    with pytest.raises(RegistryUnavailable):
        await registry.get_model("tiny", "1.0")
    with pytest.raises(RegistryUnavailable):
        await registry.register_variant(variant("1.0"))
    assert registry.sent == []
