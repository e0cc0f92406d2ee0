"""A registry command applies wholly or leaves nothing, reads only from allowed buckets, and a query
always answers (services/registry/service.py over the in-memory ports).

Commands are built here with `model_construct`, bypassing their own validation, to show that the
registry's path refuses what a cap in the contract would have refused, should one be missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.registry.adapters.memory import MemoryBlobs, MemoryRecordStore
from services.registry.domain import Admission
from services.registry.errors import BrokenRecord, BucketNotAllowed, InvalidCommand, InvalidEvalSet
from services.registry.service import RegistryService
from shared.artifacts import blob_key
from shared.messages.common import ObjectRef
from shared.messages.registry import RegisterModel, RegisterVariant, Requirements, SetAlias
from tests.unit.registry.conftest import TickingClock
from tests.unit.registry.npz_bombs import zip_bomb
from tests.unit.registry.test_service import NAME, register, stage, staged_keys

OTHER_BUCKET = "team-exports"


def unchecked_variant(blobs: MemoryBlobs, path: Path, **fields: object) -> RegisterVariant:
    defaults: dict[str, object] = {"recipe": {}, "metrics": {}, "requirements": Requirements()}
    return RegisterVariant.model_construct(
        name=NAME, version="1.0", variant="int8", artifact=stage(blobs, path), **(defaults | fields)
    )


async def test_a_nan_metric_is_rejected_and_leaves_no_record_and_no_blob(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, other_model: Path
) -> None:
    await register(registry, blobs, model)
    before = blobs.keys()
    cmd = unchecked_variant(blobs, other_model, metrics={"fidelity.cosine_mean": float("nan")})
    with pytest.raises(InvalidCommand, match="metrics.fidelity.cosine_mean: Input should be a finite number"):
        await registry.register_variant(cmd, command_id="v1")
    detail = await registry.get_model(NAME, "1.0")  # and get still answers
    assert detail.variants == []
    assert blobs.keys() == before, "neither the variant's blob nor its staging upload is left"


async def test_labels_over_their_cap_are_rejected_before_anything_is_stored(
    registry: RegistryService, blobs: MemoryBlobs, model: Path
) -> None:
    cmd = RegisterModel.model_construct(
        name=NAME,
        version="1.0",
        artifact=stage(blobs, model),
        eval_set=None,
        labels={f"k{i}": "v" * 1000 for i in range(1000)},  # ~1 MB: the probe that wrote a record and no event
        description="",
    )
    with pytest.raises(InvalidCommand, match="tiny 1.0 cannot be recorded: labels"):
        await registry.register_model(cmd, command_id="c1")
    assert await registry.list_models() == []
    assert blobs.keys() == set()


async def test_requirements_completed_beyond_their_cap_are_rejected(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, other_model: Path
) -> None:
    """The union of the sender's contrib ops and the file's is validated again, not copied in."""
    await register(registry, blobs, model)
    given = Requirements.model_construct(contrib_ops=[f"com.microsoft.Op{i}" for i in range(200)], accelerators=[])
    cmd = unchecked_variant(blobs, other_model, requirements=given)
    with pytest.raises(InvalidCommand, match="cannot be recorded: contrib_ops: List should have at most 128 items"):
        await registry.register_variant(cmd, command_id="v1")
    assert (await registry.get_model(NAME, "1.0")).variants == []


async def test_an_eval_set_bomb_is_rejected_and_nothing_is_stored(
    blobs: MemoryBlobs, signing_key: Ed25519PrivateKey, model: Path, tmp_path: Path
) -> None:
    cap = 2 * 1024**2
    registry = RegistryService(
        store=MemoryRecordStore(),
        blobs=blobs,
        signing_key=signing_key,
        clock=TickingClock(),
        admission=Admission(eval_set_max_decompressed_bytes=cap),
    )
    bomb = zip_bomb(tmp_path / "bomb.npz", inflated_bytes=64 * cap)
    with pytest.raises(InvalidEvalSet, match=f"decompresses to .* bytes; the limit is {cap}"):
        await register(registry, blobs, model, eval_set=bomb)
    assert blobs.keys() == set()


# --- buckets ----------------------------------------------------------------------------------


async def test_a_command_naming_another_bucket_is_rejected_before_any_read(
    registry: RegistryService, blobs: MemoryBlobs, model: Path
) -> None:
    blobs.fail("download")  # were the registry to read anything, this would be an outage, not a rejection
    cmd = RegisterModel(name=NAME, version="1.0", artifact=ObjectRef(key="exports/m.onnx", bucket=OTHER_BUCKET))
    with pytest.raises(BucketNotAllowed, match=f"only from the buckets {blobs.bucket}, not from '{OTHER_BUCKET}'"):
        await registry.register_model(cmd, command_id="c1")
    staged = stage(blobs, model)
    cmd = RegisterModel(name=NAME, version="1.0", artifact=staged, eval_set=ObjectRef(key="e.npz", bucket=OTHER_BUCKET))
    with pytest.raises(BucketNotAllowed, match="SLMOPS_REGISTRY_ALLOWED_BUCKETS"):
        await registry.register_model(cmd, command_id="c2")
    assert staged_keys(blobs) == set(), "a rejected command still consumes its staging upload"


async def test_an_allow_listed_bucket_is_read(
    store: MemoryRecordStore, blobs: MemoryBlobs, signing_key: Ed25519PrivateKey, model: Path
) -> None:
    registry = RegistryService(
        store=store,
        blobs=blobs,
        signing_key=signing_key,
        admission=Admission(allowed_buckets=frozenset({OTHER_BUCKET})),
    )
    blobs._put(OTHER_BUCKET, "exports/m.onnx", model.read_bytes())  # another system's export
    cmd = RegisterModel(name=NAME, version="1.0", artifact=ObjectRef(key="exports/m.onnx", bucket=OTHER_BUCKET))
    outcome = await registry.register_model(cmd, command_id="c1")
    assert outcome.status == "applied"
    assert blobs.exists(blob_key(outcome.result["digest"]))
    assert blobs.exists("exports/m.onnx", bucket=OTHER_BUCKET), "an export is read, never touched"


# --- aliases ----------------------------------------------------------------------------------


async def test_a_model_takes_a_bounded_number_of_aliases(
    registry: RegistryService, blobs: MemoryBlobs, model: Path
) -> None:
    from shared.messages.registry import MAX_ALIASES_PER_MODEL

    await register(registry, blobs, model)
    for i in range(MAX_ALIASES_PER_MODEL):
        await registry.set_alias(SetAlias(name=NAME, alias=f"a{i}", version="1.0"), command_id=f"a{i}")
    with pytest.raises(InvalidCommand, match=f"has {MAX_ALIASES_PER_MODEL} aliases"):
        await registry.set_alias(SetAlias(name=NAME, alias="one-more", version="1.0"), command_id="x")
    moved = await registry.set_alias(SetAlias(name=NAME, alias="a0", version="1.0"), command_id="y")
    assert moved.status == "unchanged", "an existing alias can always be set"


# --- queries always answer --------------------------------------------------------------------


async def test_get_of_a_broken_record_is_an_error_that_names_it(
    registry: RegistryService, store: MemoryRecordStore, blobs: MemoryBlobs, model: Path, other_model: Path
) -> None:
    """What the NaN probe left behind (its metric stored as null) answers with an error, not silence."""
    await register(registry, blobs, model)
    await registry.register_variant(
        RegisterVariant(name=NAME, version="1.0", variant="int8", artifact=stage(blobs, other_model)),
        command_id="v1",
    )
    key = (NAME, "1.0", "int8")
    store._variants[key] = store._variants[key].replace('"metrics":{}', '"metrics":{"cosine":null}')
    with pytest.raises(BrokenRecord, match="unreadable .*metrics.cosine: Input should be a valid number"):
        await registry.get_model(NAME, "1.0")
    assert BrokenRecord.code == "internal"
