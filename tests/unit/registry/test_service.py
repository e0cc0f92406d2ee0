"""The registry's use cases (services/registry/service.py) driven directly over the in-memory ports.

What the integration tests prove through NATS and S3, these prove about the logic: what a command
records, signs, stores and announces; what a repeat, a conflict, a bad file or a redelivery does;
what a query answers; and which staging uploads and blobs survive a rejection or an outage.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import onnx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from samples.tiny import build_tiny_embedder
from services.registry.adapters.memory import MemoryBlobs, MemoryRecordStore
from services.registry.errors import (
    ArtifactMissing,
    InvalidEvalSet,
    InvalidModel,
    NotFound,
    Unavailable,
    VersionConflict,
)
from services.registry.service import RegistryService
from shared import signing
from shared.artifacts import STAGING_PREFIX, blob_key
from shared.digests import sha256_file
from shared.messages.common import ObjectRef
from shared.messages.envelope import deterministic_id
from shared.messages.registry import (
    AliasChanged,
    AliasRecord,
    ModelRegistered,
    RegisterModel,
    RegisterVariant,
    Requirements,
    SetAlias,
    VariantRegistered,
)
from shared.outcomes import Outcome

NAME = "tiny"


def stage(blobs: MemoryBlobs, path: Path) -> ObjectRef:
    """Upload a file as the CLI does, under `incoming/`."""
    return ObjectRef(key=blobs.upload_staging(path).key)


def register_command(
    blobs: MemoryBlobs, model: Path, version: str = "1.0", *, eval_set: Path | None = None
) -> RegisterModel:
    return RegisterModel(
        name=NAME,
        version=version,
        artifact=stage(blobs, model),
        eval_set=stage(blobs, eval_set) if eval_set else None,
        labels={"task": "embedding"},
    )


async def register(
    registry: RegistryService,
    blobs: MemoryBlobs,
    model: Path,
    version: str = "1.0",
    *,
    eval_set: Path | None = None,
    command_id: str = "cmd-register",
) -> Outcome:
    cmd = register_command(blobs, model, version, eval_set=eval_set)
    return await registry.register_model(cmd, command_id=command_id)


async def register_two(
    registry: RegistryService, blobs: MemoryBlobs, first: Path, second: Path, versions: tuple[str, str] = ("1.0", "2.0")
) -> None:
    """Register two versions, one after the other (so the second is `latest`)."""
    await register(registry, blobs, first, versions[0], command_id="r1")
    await register(registry, blobs, second, versions[1], command_id="r2")


def variant_command(blobs: MemoryBlobs, path: Path, *, version: str = "1.0") -> RegisterVariant:
    return RegisterVariant(
        name=NAME,
        version=version,
        variant="int8",
        artifact=stage(blobs, path),
        recipe={"passes": [{"type": "OnnxDynamicQuantization", "config": {"per_channel": True}}]},
        metrics={"fidelity.cosine_mean": 0.995, "size_ratio": 0.26},
        requirements=Requirements(min_onnxruntime="1.17", min_ram_mb=256, contrib_ops=["com.microsoft.Custom"]),
    )


def staged_keys(blobs: MemoryBlobs) -> set[str]:
    return {k for k in blobs.keys() if k.startswith(STAGING_PREFIX)}


def uploads(cmd: RegisterModel) -> set[str]:
    """The staging keys a command names."""
    return {ref.key for ref in (cmd.artifact, cmd.eval_set) if ref is not None}


def write_model(path: Path, model: onnx.ModelProto) -> Path:
    onnx.save(model, str(path))
    return path


# --- model.register ---------------------------------------------------------------------------


async def test_register_records_the_onnx_facts_and_the_eval_set(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, eval_set: Path
) -> None:
    outcome = await register(registry, blobs, model, eval_set=eval_set)
    assert outcome.status == "applied"
    version = (await registry.get_model(NAME, "1.0")).version
    assert (version.artifact.digest, version.artifact.size_bytes) == sha256_file(model)
    assert version.onnx.opsets == {"": 17} and version.onnx.producer == "slmops-sample 1"
    assert [(i.name, i.dtype, i.shape) for i in version.onnx.inputs] == [
        ("input_ids", "int64", ["batch", "sequence"]),
        ("attention_mask", "int64", ["batch", "sequence"]),
    ]
    assert version.eval_set is not None and version.eval_set.digest == sha256_file(eval_set)[0]
    assert version.eval_set.samples == 32 and version.eval_set.arrays["input_ids"] == [32, 16]
    assert version.labels == {"task": "embedding"} and version.command_id == "cmd-register"


async def test_register_signs_the_digest(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, signing_key: Ed25519PrivateKey
) -> None:
    await register(registry, blobs, model)
    artifact = (await registry.get_model(NAME, "1.0")).version.artifact
    public = signing.public_key_pem(signing_key)
    assert signing.verify_digest(public, artifact.digest, artifact.signature)
    assert not signing.verify_digest(public, "0" * 64, artifact.signature)


async def test_register_stores_blobs_by_content_and_consumes_the_staging_uploads(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, eval_set: Path
) -> None:
    await register(registry, blobs, model, eval_set=eval_set)
    version = (await registry.get_model(NAME, "1.0")).version
    assert version.eval_set is not None
    assert blobs.keys() == {blob_key(sha256_file(model)[0]), blob_key(sha256_file(eval_set)[0])}
    assert version.artifact.key == blob_key(version.artifact.digest)
    assert version.eval_set.key == blob_key(version.eval_set.digest)
    assert blobs.read_bytes(version.artifact.key) == model.read_bytes()


async def test_register_announces_model_registered_with_its_deterministic_id(
    registry: RegistryService, blobs: MemoryBlobs, model: Path
) -> None:
    outcome = await register(registry, blobs, model)
    ((event, event_id),) = outcome.events
    digest = sha256_file(model)[0]
    assert isinstance(event, ModelRegistered) and event.record == (await registry.get_model(NAME, "1.0")).version
    assert event_id == deterministic_id("model.registered", NAME, "1.0", digest)
    assert outcome.result == {"name": NAME, "version": "1.0", "digest": digest}


async def test_the_same_bytes_again_are_unchanged_and_announce_nothing(
    registry: RegistryService, blobs: MemoryBlobs, model: Path
) -> None:
    first = await register(registry, blobs, model, command_id="first")
    again = await register(registry, blobs, model, command_id="second")
    assert (again.status, again.events, again.result) == ("unchanged", (), first.result)
    assert (await registry.get_model(NAME, "1.0")).version.command_id == "first"
    assert staged_keys(blobs) == set()


async def test_other_bytes_for_a_version_conflict_and_leave_nothing_behind(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, other_model: Path
) -> None:
    await register(registry, blobs, model, command_id="first")
    before = blobs.keys()
    with pytest.raises(VersionConflict, match=f"{NAME} 1.0 is already registered.*immutable"):
        await register(registry, blobs, other_model, command_id="second")
    assert (await registry.get_model(NAME, "1.0")).version.artifact.digest == sha256_file(model)[0]
    assert blobs.keys() == before, "neither a blob nor the staging upload of the conflicting bytes is left"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "the file is empty"),
        (b"this is a text file, not a model", "not an ONNX model"),
        (None, "not an ONNX model"),  # truncated: the first 4 KiB of a real model
    ],
    ids=["empty", "text", "truncated"],
)
async def test_bad_files_are_invalid_and_leave_no_blob(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, tmp_path: Path, content: bytes | None, expected: str
) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content if content is not None else model.read_bytes()[:4096])
    with pytest.raises(InvalidModel, match=expected):
        await register(registry, blobs, bad)
    assert blobs.keys() == set()
    with pytest.raises(NotFound):
        await registry.get_model(NAME)


async def test_a_model_the_checker_refuses_is_invalid(
    registry: RegistryService, blobs: MemoryBlobs, tmp_path: Path
) -> None:
    broken = build_tiny_embedder()
    broken.graph.node[1].input[1] = "no_such_tensor"  # MatMul reads an undefined value
    with pytest.raises(InvalidModel, match="onnx.checker.*no_such_tensor"):
        await register(registry, blobs, write_model(tmp_path / "broken.onnx", broken))
    assert blobs.keys() == set()


async def test_an_eval_set_that_does_not_fit_deletes_the_model_blob_it_followed(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, input_ids=np.zeros((4, 8), dtype=np.int64))
    with pytest.raises(InvalidEvalSet, match="attention_mask"):
        await register(registry, blobs, model, eval_set=wrong)
    assert blobs.keys() == set(), "the model blob stored before the eval set was checked is deleted"


async def test_a_missing_source_object_is_artifact_missing(registry: RegistryService) -> None:
    cmd = RegisterModel(name=NAME, version="1", artifact=ObjectRef(key="does/not/exist.onnx"))
    with pytest.raises(ArtifactMissing, match="does not exist"):
        await registry.register_model(cmd, command_id="c")


async def test_an_object_outside_incoming_is_read_and_left_to_its_owner(
    registry: RegistryService, blobs: MemoryBlobs, model: Path
) -> None:
    key = "teams/ml/export.onnx"
    blobs.put_bytes(key, model.read_bytes())
    cmd = RegisterModel(name=NAME, version="2.1", artifact=ObjectRef(key=key, bucket=blobs.bucket))
    outcome = await registry.register_model(cmd, command_id="c")
    assert outcome.status == "applied"
    assert blobs.keys() == {key, blob_key(outcome.result["digest"])}


async def test_a_blob_other_records_share_survives_a_failed_registration(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, tmp_path: Path
) -> None:
    await register(registry, blobs, model, "1.0", command_id="first")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, input_ids=np.zeros((4, 8), dtype=np.int64))
    with pytest.raises(InvalidEvalSet):
        await register(registry, blobs, model, "2.0", eval_set=wrong, command_id="second")
    assert blobs.exists(blob_key(sha256_file(model)[0])), "1.0 still needs the blob 2.0 found already there"


# --- redelivery -------------------------------------------------------------------------------


async def test_a_redelivered_command_re_announces_the_same_event(
    registry: RegistryService, blobs: MemoryBlobs, model: Path
) -> None:
    """The first delivery applied and consumed its staging upload, then crashed before its ack."""
    cmd = register_command(blobs, model)
    first = await registry.register_model(cmd, command_id="cmd-1")
    assert not blobs.exists(cmd.artifact.key)
    replay = await registry.register_model(cmd, command_id="cmd-1")
    assert replay.status == "applied"
    assert replay.events == first.events, "same event, same id: JetStream drops the duplicate"


# --- model.variant.register -------------------------------------------------------------------


async def test_a_variant_records_its_lineage_recipe_and_metrics(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, other_model: Path
) -> None:
    await register(registry, blobs, model)
    cmd = variant_command(blobs, other_model)
    outcome = await registry.register_variant(cmd, command_id="cmd-variant")
    detail = await registry.get_model(NAME, "1.0")
    (variant,) = detail.variants
    assert variant.parent_digest == detail.version.artifact.digest
    assert variant.artifact.digest == sha256_file(other_model)[0] == outcome.result["digest"]
    assert (variant.recipe, variant.metrics) == (cmd.recipe, cmd.metrics)
    assert staged_keys(blobs) == set()


async def test_a_variant_s_requirements_are_completed_from_the_file(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, other_model: Path
) -> None:
    await register(registry, blobs, model)
    await registry.register_variant(variant_command(blobs, other_model), command_id="cmd-variant")
    (variant,) = (await registry.get_model(NAME, "1.0")).variants
    assert variant.requirements.opset == 17, "the default-domain opset is read from the file"
    assert (variant.requirements.min_onnxruntime, variant.requirements.min_ram_mb) == ("1.17", 256)
    assert variant.requirements.contrib_ops == ["com.microsoft.Custom"]


async def test_a_variant_is_announced_with_its_deterministic_id(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, other_model: Path
) -> None:
    await register(registry, blobs, model)
    outcome = await registry.register_variant(variant_command(blobs, other_model), command_id="cmd-variant")
    ((event, event_id),) = outcome.events
    assert isinstance(event, VariantRegistered) and event.record.variant == "int8"
    assert event_id == deterministic_id("variant.registered", NAME, "1.0", "int8", sha256_file(other_model)[0])


async def test_a_variant_is_immutable_like_a_version(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, other_model: Path
) -> None:
    await register(registry, blobs, model)
    await registry.register_variant(variant_command(blobs, other_model), command_id="first")
    again = await registry.register_variant(variant_command(blobs, other_model), command_id="second")
    assert (again.status, again.events) == ("unchanged", ())
    with pytest.raises(VersionConflict, match="variant int8 is already registered"):
        await registry.register_variant(variant_command(blobs, model), command_id="third")
    assert staged_keys(blobs) == set()


async def test_a_variant_of_an_unregistered_version_is_not_found_and_consumed(
    registry: RegistryService, blobs: MemoryBlobs, other_model: Path
) -> None:
    with pytest.raises(NotFound, match="9.9 is not registered"):
        await registry.register_variant(variant_command(blobs, other_model, version="9.9"), command_id="c")
    assert blobs.keys() == set()


# --- model.alias.set --------------------------------------------------------------------------


async def test_an_alias_moves_with_its_history_and_announces_each_change(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, other_model: Path
) -> None:
    await register_two(registry, blobs, model, other_model)
    first = await registry.set_alias(SetAlias(name=NAME, alias="stable", version="1.0"), command_id="a1")
    second = await registry.set_alias(SetAlias(name=NAME, alias="stable", version="2.0"), command_id="a2")
    assert [e for e, _ in (*first.events, *second.events)] == [
        AliasChanged(name=NAME, alias="stable", version="1.0", previous=None),
        AliasChanged(name=NAME, alias="stable", version="2.0", previous="1.0"),
    ]
    assert second.events[0][1] == deterministic_id("alias.changed", "a2")
    (alias,) = await registry.aliases(NAME)
    assert [(c.version, c.previous, c.command_id) for c in alias.history] == [
        ("1.0", None, "a1"),
        ("2.0", "1.0", "a2"),
    ]


async def test_pointing_an_alias_where_it_points_is_unchanged(
    registry: RegistryService, blobs: MemoryBlobs, model: Path
) -> None:
    await register(registry, blobs, model)
    await registry.set_alias(SetAlias(name=NAME, alias="stable", version="1.0"), command_id="a1")
    again = await registry.set_alias(SetAlias(name=NAME, alias="stable", version="1.0"), command_id="a2")
    assert (again.status, again.events) == ("unchanged", ())
    assert [c.command_id for c in (await registry.aliases(NAME))[0].history] == ["a1"]


async def test_a_redelivered_alias_command_re_announces(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, other_model: Path
) -> None:
    await register_two(registry, blobs, model, other_model)
    await registry.set_alias(SetAlias(name=NAME, alias="stable", version="1.0"), command_id="a1")
    cmd = SetAlias(name=NAME, alias="stable", version="2.0")
    first = await registry.set_alias(cmd, command_id="a2")
    replay = await registry.set_alias(cmd, command_id="a2")
    assert (replay.status, replay.events) == ("applied", first.events)
    assert len((await registry.aliases(NAME))[0].history) == 2


class RacingStore(MemoryRecordStore):
    """A store where another writer moves the alias right after each of our first `races` reads."""

    def __init__(self, *, races: int, rival: str) -> None:
        super().__init__()
        self.races = races
        self.rival = rival

    async def get_alias(self, name: str, alias: str) -> tuple[AliasRecord, int] | None:
        read = await super().get_alias(name, alias)
        if self.races > 0:
            self.races -= 1
            moved = await super().get_alias(name, alias)
            history = moved[0].history if moved else []
            rival = AliasRecord(name=name, alias=alias, version=self.rival, history=history)
            await self.put_alias(rival, revision=moved[1] if moved else None)
        return read


async def test_an_alias_change_that_loses_a_race_decides_again_on_the_winner(
    blobs: MemoryBlobs, signing_key: Ed25519PrivateKey, model: Path, other_model: Path
) -> None:
    store = RacingStore(races=1, rival="1.0")
    registry = RegistryService(store=store, blobs=blobs, signing_key=signing_key)
    await register_two(registry, blobs, model, other_model)
    outcome = await registry.set_alias(SetAlias(name=NAME, alias="stable", version="2.0"), command_id="a1")
    ((event, _),) = outcome.events
    assert isinstance(event, AliasChanged) and event.previous == "1.0", "the rival's write is what we moved from"


async def test_an_alias_that_keeps_changing_is_unavailable(
    blobs: MemoryBlobs, signing_key: Ed25519PrivateKey, model: Path
) -> None:
    registry = RegistryService(store=RacingStore(races=99, rival="0.9"), blobs=blobs, signing_key=signing_key)
    await register(registry, blobs, model, "1.0")
    with pytest.raises(Unavailable, match="kept changing"):
        await registry.set_alias(SetAlias(name=NAME, alias="stable", version="1.0"), command_id="a1")


async def test_an_alias_to_an_unregistered_version_is_not_found(
    registry: RegistryService, blobs: MemoryBlobs, model: Path
) -> None:
    await register(registry, blobs, model)
    with pytest.raises(NotFound, match="no such version"):
        await registry.set_alias(SetAlias(name=NAME, alias="stable", version="3.0"), command_id="a1")
    assert await registry.aliases(NAME) == []


# --- queries ----------------------------------------------------------------------------------


async def test_list_summarises_each_model_in_registration_order(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, other_model: Path
) -> None:
    await register_two(registry, blobs, model, other_model, ("2.0", "10.0"))
    await registry.set_alias(SetAlias(name=NAME, alias="stable", version="2.0"), command_id="a1")
    (summary,) = await registry.list_models()
    assert (summary.name, summary.versions, summary.latest) == (NAME, ["2.0", "10.0"], "10.0")
    assert summary.aliases == {"stable": "2.0"}
    assert await registry.list_models("other") == []


async def test_get_resolves_a_version_an_alias_or_latest(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, other_model: Path
) -> None:
    await register_two(registry, blobs, model, other_model)
    await registry.set_alias(SetAlias(name=NAME, alias="stable", version="1.0"), command_id="a1")
    assert (await registry.get_model(NAME)).version.version == "2.0"
    stable = await registry.get_model(NAME, "stable")
    assert (stable.version.version, stable.aliases) == ("1.0", ["stable"])
    assert (await registry.get_model(NAME, "2.0")).aliases == []


async def test_get_lists_a_version_s_variants(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, other_model: Path
) -> None:
    await register(registry, blobs, model, "1.0")
    await registry.register_variant(variant_command(blobs, other_model), command_id="v1")
    assert [v.variant for v in (await registry.get_model(NAME, "1.0")).variants] == ["int8"]


async def test_unknown_models_and_refs_are_not_found(
    registry: RegistryService, blobs: MemoryBlobs, model: Path
) -> None:
    with pytest.raises(NotFound, match="no model named 'nope'"):
        await registry.get_model("nope")
    await register(registry, blobs, model, "1.0")
    with pytest.raises(NotFound, match="no version '9.9'; versions: 1.0"):
        await registry.get_model(NAME, "9.9")
    with pytest.raises(NotFound, match="no alias 'stable'; aliases: none"):
        await registry.get_model(NAME, "stable")


async def test_a_download_url_is_presigned_for_the_ttl_with_the_record_s_signature(
    registry: RegistryService, blobs: MemoryBlobs, model: Path
) -> None:
    outcome = await register(registry, blobs, model)
    artifact = (await registry.get_model(NAME, "1.0")).version.artifact
    reply = await registry.download_url(outcome.result["digest"])
    assert (reply.digest, reply.size_bytes, reply.signature) == (
        artifact.digest,
        artifact.size_bytes,
        artifact.signature,
    )
    assert reply.expires_in_seconds == int(blobs.presign_ttl.total_seconds())
    url = urlsplit(reply.url)
    assert url.path.endswith(artifact.key)
    assert parse_qs(url.query)["X-Amz-Expires"] == [str(reply.expires_in_seconds)]


async def test_a_variant_is_downloadable_by_its_digest(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, other_model: Path
) -> None:
    await register(registry, blobs, model)
    outcome = await registry.register_variant(variant_command(blobs, other_model), command_id="v1")
    reply = await registry.download_url(outcome.result["digest"])
    assert urlsplit(reply.url).path.endswith(blob_key(outcome.result["digest"]))


async def test_an_eval_set_is_served_by_digest_signed_on_request(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, eval_set: Path, signing_key: Ed25519PrivateKey
) -> None:
    await register(registry, blobs, model, eval_set=eval_set)
    digest, size = sha256_file(eval_set)
    reply = await registry.download_url(digest)
    assert reply.size_bytes == size and urlsplit(reply.url).path.endswith(blob_key(digest))
    assert signing.verify_digest(signing.public_key_pem(signing_key), digest, reply.signature)


async def test_an_unknown_digest_has_no_download_url(registry: RegistryService) -> None:
    with pytest.raises(NotFound, match=f"no registered artifact or evaluation set has sha256 {'f' * 64}"):
        await registry.download_url("f" * 64)


async def test_the_public_key_is_the_signing_key_s(registry: RegistryService, signing_key: Ed25519PrivateKey) -> None:
    reply = await registry.public_key()
    assert reply.public_key_pem == signing.public_key_pem(signing_key)
    assert reply.key_id == signing.key_id(reply.public_key_pem)


# --- S3 outages -------------------------------------------------------------------------------


async def test_an_outage_keeps_the_staging_uploads_for_the_redelivery(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, eval_set: Path
) -> None:
    cmd = register_command(blobs, model, eval_set=eval_set)
    blobs.fail("put_blob")
    with pytest.raises(Unavailable, match="unreachable"):
        await registry.register_model(cmd, command_id="c1")
    assert staged_keys(blobs) == uploads(cmd)
    with pytest.raises(NotFound):
        await registry.get_model(NAME)
    blobs.recover()
    assert (await registry.register_model(cmd, command_id="c1")).status == "applied"
    assert staged_keys(blobs) == set()


async def test_an_outage_after_the_model_blob_deletes_it(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, eval_set: Path
) -> None:
    cmd = register_command(blobs, model, eval_set=eval_set)
    blobs.fail("put_blob", key=blob_key(sha256_file(eval_set)[0]))
    with pytest.raises(Unavailable):
        await registry.register_model(cmd, command_id="c1")
    assert blobs.keys() == staged_keys(blobs), "the model blob this call stored is gone; the uploads stay"


async def test_a_failed_staging_clean_up_is_logged_and_does_not_mask_the_rejection(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, input_ids=np.zeros((4, 8), dtype=np.int64))
    cmd = register_command(blobs, model, eval_set=wrong)
    blobs.fail("delete")
    with pytest.raises(InvalidEvalSet):
        await registry.register_model(cmd, command_id="c1")
    warnings = [(r.getMessage(), getattr(r, "key", None)) for r in caplog.records if r.levelname == "WARNING"]
    assert {key for message, key in warnings if message == "could not delete staging upload"} == uploads(cmd)
    assert blobs.keys() == uploads(cmd), "a rejected eval set is found before any blob is stored"


async def test_a_failed_blob_clean_up_is_logged_and_does_not_mask_the_outage(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, eval_set: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cmd = register_command(blobs, model, eval_set=eval_set)
    blobs.fail("put_blob", key=blob_key(sha256_file(eval_set)[0]))
    blobs.fail("delete")
    with pytest.raises(Unavailable):
        await registry.register_model(cmd, command_id="c1")
    warnings = [(r.getMessage(), getattr(r, "key", None)) for r in caplog.records if r.levelname == "WARNING"]
    assert ("could not delete blob after a failed registration", blob_key(sha256_file(model)[0])) in warnings
