"""What every `RecordStore` must do, as a test class each adapter's tests subclass with a `records` fixture.

`tests/unit/registry/adapters/test_memory.py` runs it against the in-memory store and
`tests/integration/test_registry.py` against JetStream KV, so the store the registry's unit tests
use keeps the records the way production does: create never overwrites, an alias is written with
compare-and-set on its revision, and a digest (of a model, a variant or an evaluation set) finds
its blob.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

import pytest

from services.registry.ports import RecordStore
from shared.messages.registry import (
    AliasChange,
    AliasRecord,
    Artifact,
    EvalSet,
    ModelVersionRecord,
    OnnxInfo,
    Requirements,
    VariantRecord,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
INFO = OnnxInfo(ir_version=8, opsets={"": 17}, inputs=[], outputs=[], parameters=0, op_types=[])


def digest(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def artifact(seed: str) -> Artifact:
    d = digest(seed)
    return Artifact(digest=d, size_bytes=len(seed), key=f"blobs/sha256/{d}", signature=f"sig-{seed}")


def version_record(
    name: str, version: str, *, seed: str = "model", eval_seed: str | None = None, command_id: str = "c1"
) -> ModelVersionRecord:
    eval_set = None
    if eval_seed is not None:
        d = digest(eval_seed)
        eval_set = EvalSet(digest=d, size_bytes=7, key=f"blobs/sha256/{d}", samples=2, arrays={"x": [2, 3]})
    return ModelVersionRecord(
        name=name,
        version=version,
        artifact=artifact(f"{name}/{version}/{seed}"),
        onnx=INFO,
        eval_set=eval_set,
        registered_at=T0,
        command_id=command_id,
    )


def variant_record(name: str, version: str, variant: str) -> VariantRecord:
    return VariantRecord(
        name=name,
        version=version,
        variant=variant,
        parent_digest=digest("parent"),
        artifact=artifact(f"{name}/{version}/{variant}"),
        onnx=INFO,
        requirements=Requirements(),
        registered_at=T0,
        command_id="c1",
    )


def alias_record(name: str, version: str, *, command_id: str) -> AliasRecord:
    change = AliasChange(version=version, previous=None, at=T0, command_id=command_id)
    return AliasRecord(name=name, alias="stable", version=version, history=[change])


class RecordStoreContract:
    """Subclass as `Test<Adapter>` and provide a `records` fixture returning an empty store."""

    @pytest.fixture
    def name(self) -> str:
        """A model name no other test uses (the KV bucket may be shared)."""
        return f"m-{uuid.uuid4().hex[:10]}"

    async def test_a_version_is_read_back_as_written(self, records: RecordStore, name: str) -> None:
        record = version_record(name, "1.0", eval_seed="eval")
        assert await records.create_version(record)
        assert await records.get_version(name, "1.0") == record
        assert await records.get_version(name, "2.0") is None

    async def test_create_never_overwrites_a_version(self, records: RecordStore, name: str) -> None:
        first = version_record(name, "1.0", seed="a", command_id="first")
        assert await records.create_version(first)
        assert not await records.create_version(version_record(name, "1.0", seed="b", command_id="second"))
        assert await records.get_version(name, "1.0") == first

    async def test_create_never_overwrites_a_variant(self, records: RecordStore, name: str) -> None:
        first = variant_record(name, "1.0", "int8")
        assert await records.create_variant(first)
        assert not await records.create_variant(first.model_copy(update={"command_id": "other"}))
        assert await records.get_variant(name, "1.0", "int8") == first

    async def test_versions_are_listed_by_model(self, records: RecordStore, name: str) -> None:
        other = f"{name}-other"
        for model, version in ((name, "1.0"), (name, "2.0"), (other, "1.0")):
            await records.create_version(version_record(model, version))
        assert sorted(v.version for v in await records.list_versions(name)) == ["1.0", "2.0"]
        everything = {(v.name, v.version) for v in await records.list_versions()}
        assert {(name, "1.0"), (name, "2.0"), (other, "1.0")} <= everything

    async def test_variants_are_listed_by_exact_version(self, records: RecordStore, name: str) -> None:
        """Dots are not separators: version 1.0's variants are not 1.0.1's."""
        await records.create_variant(variant_record(name, "1.0", "int8"))
        await records.create_variant(variant_record(name, "1.0", "fp16"))
        await records.create_variant(variant_record(name, "1.0.1", "int4"))
        assert sorted(v.variant for v in await records.list_variants(name, "1.0")) == ["fp16", "int8"]
        assert [v.variant for v in await records.list_variants(name, "1.0.1")] == ["int4"]

    async def test_an_alias_is_created_once_then_updated_by_revision(self, records: RecordStore, name: str) -> None:
        first = alias_record(name, "1.0", command_id="a1")
        assert await records.put_alias(first, revision=None)
        assert not await records.put_alias(alias_record(name, "9.9", command_id="a9"), revision=None)
        stored = await records.get_alias(name, "stable")
        assert stored is not None and stored[0] == first
        second = alias_record(name, "2.0", command_id="a2")
        assert await records.put_alias(second, revision=stored[1])
        assert not await records.put_alias(alias_record(name, "3.0", command_id="a3"), revision=stored[1])
        assert [a.version for a in await records.list_aliases(name)] == ["2.0"]

    async def test_a_model_s_digest_finds_its_signed_blob(self, records: RecordStore, name: str) -> None:
        record = version_record(name, "1.0")
        await records.create_version(record)
        blob = await records.find_blob(record.artifact.digest)
        assert blob is not None
        assert (blob.key, blob.size_bytes, blob.signature) == (
            record.artifact.key,
            record.artifact.size_bytes,
            record.artifact.signature,
        )

    async def test_a_variant_s_digest_finds_its_blob(self, records: RecordStore, name: str) -> None:
        record = variant_record(name, "1.0", "int8")
        await records.create_variant(record)
        blob = await records.find_blob(record.artifact.digest)
        assert blob is not None and (blob.key, blob.signature) == (record.artifact.key, record.artifact.signature)

    async def test_an_eval_set_s_digest_finds_it_unsigned(self, records: RecordStore, name: str) -> None:
        record = version_record(name, "1.0", eval_seed=f"{name}-eval")
        await records.create_version(record)
        assert record.eval_set is not None
        blob = await records.find_blob(record.eval_set.digest)
        assert blob is not None
        assert (blob.key, blob.size_bytes, blob.signature) == (record.eval_set.key, record.eval_set.size_bytes, None)

    async def test_a_digest_that_lost_the_create_finds_nothing(self, records: RecordStore, name: str) -> None:
        kept = version_record(name, "1.0", seed="kept")
        refused = version_record(name, "1.0", seed="refused")
        await records.create_version(kept)
        await records.create_version(refused)
        assert await records.find_blob(refused.artifact.digest) is None
        assert await records.find_blob(kept.artifact.digest) is not None
        assert await records.find_blob(digest("never stored")) is None
