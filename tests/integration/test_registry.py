"""The registry service against the real servers: commands, events, DLQ, queries, clean-up."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.errors import KeyNotFoundError

from services.registry.adapters.nats_kv import KvRecordStore, variant_key
from shared import bus, signing
from shared.artifacts import ArtifactStore, blob_key
from shared.clients import RegistryClient
from shared.digests import sha256_file
from shared.errors import NotFound, SlmopsError
from shared.messages.common import CommandOutcome, ObjectRef
from shared.messages.registry import (
    ModelDetail,
    RegisterModel,
    RegisterVariant,
    Requirements,
    SetAlias,
)
from tests.support import dlq_entries, sample_files, stream_messages, unique
from tests.unit.registry.adapters.record_store_contract import RecordStoreContract

pytestmark = pytest.mark.usefixtures("running_registry")


async def register(
    nc: Client,
    store: ArtifactStore,
    model: Path,
    name: str,
    version: str,
    *,
    eval_set: Path | None = None,
    **extra: object,
) -> CommandOutcome:
    """Stage the files and send the command; asserts the staging uploads are consumed."""
    staged = [store.upload_staging(model)] + ([store.upload_staging(eval_set)] if eval_set else [])
    eval_ref = ObjectRef(key=staged[1].key) if eval_set else None
    cmd = RegisterModel(name=name, version=version, artifact=ObjectRef(key=staged[0].key), eval_set=eval_ref, **extra)  # type: ignore[arg-type]
    _, outcome = await bus.send_command(nc, cmd, source="tests", wait=30)
    assert outcome is not None, "no verdict from the registry"
    assert not [o.key for o in staged if store.exists(o.key)], "a decided command must consume its staging uploads"
    return outcome


async def get(nc: Client, name: str, ref: str = "latest") -> ModelDetail:
    return await RegistryClient(nc, source="tests").get_model(name, ref)


async def test_register_records_onnx_facts_eval_set_and_signature(
    nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    model, eval_set = sample_files(tmp_path)
    name = unique()
    outcome = await register(nc, artifacts, model, name, "1.0.0", eval_set=eval_set, labels={"task": "embedding"})
    assert outcome.status == "applied"
    detail = await get(nc, name, "1.0.0")
    v = detail.version
    digest, size = sha256_file(model)
    assert v.artifact.digest == digest and v.artifact.size_bytes == size
    assert v.onnx.opsets == {"": 17}
    assert [i.name for i in v.onnx.inputs] == ["input_ids", "attention_mask"]
    assert v.onnx.inputs[0].shape == ["batch", "sequence"] and v.onnx.inputs[0].dtype == "int64"
    assert v.onnx.outputs[0].shape == ["batch", 64]
    assert v.onnx.parameters == 1000 * 64 + 64 * 64 + 64 + 3  # weights plus the three tiny constants
    assert v.eval_set is not None and v.eval_set.samples == 32
    assert v.labels == {"task": "embedding"}
    public = await RegistryClient(nc, source="tests").public_key()
    assert signing.verify_digest(public.public_key_pem, digest, v.artifact.signature)
    assert not signing.verify_digest(public.public_key_pem, "0" * 64, v.artifact.signature)
    # the blob is stored content-addressed and the staging uploads are gone
    assert artifacts.exists(blob_key(digest))
    assert v.eval_set.key == blob_key(v.eval_set.digest) and artifacts.exists(v.eval_set.key)


async def test_same_version_same_bytes_is_a_noop_and_other_bytes_conflict(
    nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    model, _ = sample_files(tmp_path / "a", seed=0)
    other, _ = sample_files(tmp_path / "b", seed=7)
    name = unique()
    assert (await register(nc, artifacts, model, name, "1.0")).status == "applied"
    assert (await register(nc, artifacts, model, name, "1.0")).status == "unchanged"
    conflict = await register(nc, artifacts, other, name, "1.0")
    assert conflict.status == "rejected"
    assert "immutable" in (conflict.reason or "") and "1.0" in (conflict.reason or "")
    detail = await get(nc, name, "1.0")
    assert detail.version.artifact.digest == sha256_file(model)[0]
    events = [
        e for e, _ in await stream_messages(nc, "slmops.evt.model.registered") if e["data"]["record"]["name"] == name
    ]
    assert len(events) == 1
    # the conflicting bytes left nothing behind
    assert not artifacts.exists(blob_key(sha256_file(other)[0]))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (b"this is a text file, not a model", "not an ONNX model"),
        (None, "not an ONNX model"),  # truncated: first 4 KiB of a real model
    ],
    ids=["empty", "text", "truncated"],
)
async def test_bad_files_are_rejected_with_a_reason_and_leave_nothing(
    nc: Client, artifacts: ArtifactStore, tmp_path: Path, content: bytes | None, expected: str
) -> None:
    model, _ = sample_files(tmp_path)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content if content is not None else model.read_bytes()[:4096])
    name = unique()
    before = set(_keys(artifacts))
    outcome = await register(nc, artifacts, bad, name, "1")
    assert outcome.status == "rejected"
    assert expected in (outcome.reason or "")
    assert set(_keys(artifacts)) - before == set(), "a rejected registration left objects behind"
    with pytest.raises(NotFound) as missing:
        await get(nc, name)
    assert missing.value.remote_code == "not_found"
    entries = await dlq_entries(nc, containing=name)
    assert len(entries) == 1 and expected in entries[0]["Slmops-Dlq-Reason"]


async def test_model_that_fails_the_checker_is_rejected(nc: Client, artifacts: ArtifactStore, tmp_path: Path) -> None:
    import onnx

    from samples.tiny import build_tiny_embedder

    broken = build_tiny_embedder()
    broken.graph.node[1].input[1] = "no_such_tensor"  # MatMul reads an undefined value
    path = tmp_path / "broken.onnx"
    onnx.save(broken, str(path))
    outcome = await register(nc, artifacts, path, unique(), "1")
    assert outcome.status == "rejected"
    assert "onnx.checker" in (outcome.reason or "") and "no_such_tensor" in (outcome.reason or "")


async def test_eval_set_that_does_not_fit_the_model_is_rejected(
    nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    import numpy as np

    model, _ = sample_files(tmp_path)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, input_ids=np.zeros((4, 8), dtype=np.int64))
    name = unique()
    before = set(_keys(artifacts))
    outcome = await register(nc, artifacts, model, name, "1", eval_set=wrong)
    assert outcome.status == "rejected"
    assert "attention_mask" in (outcome.reason or "")
    assert set(_keys(artifacts)) - before == set(), "the model blob must not outlive a rejected registration"


async def test_schema_invalid_and_garbage_commands_go_to_the_dlq(nc: Client) -> None:
    js = nc.jetstream()
    marker = unique("garbage")
    await js.publish("slmops.cmd.model.register", f"not json {marker}".encode())
    bad_schema = {
        "type": "model.register",
        "schema_version": 1,
        "id": marker,
        "time": "2026-01-01T00:00:00Z",
        "source": "tests",
        "data": {"name": "UPPER CASE", "version": "1", "artifact": {"key": "x"}, "extra": 1},
    }
    await js.publish("slmops.cmd.model.register", json.dumps(bad_schema).encode(), headers={"Nats-Msg-Id": marker})
    for _ in range(50):
        entries = await dlq_entries(nc, containing=marker)
        if len(entries) == 2:
            break
        await asyncio.sleep(0.2)
    reasons = sorted(e["Slmops-Dlq-Reason"] for e in entries)
    assert len(reasons) == 2
    assert any("not JSON" in r for r in reasons)
    assert any(
        "name: String should match pattern" in r and "extra: Extra inputs are not permitted" in r for r in reasons
    )
    assert all(e["Slmops-Dlq-Service"] == "registry" for e in entries)
    # and the registry is still serving
    assert isinstance(await RegistryClient(nc, source="tests").list_models(), list)


async def test_unknown_source_object_is_rejected(nc: Client) -> None:
    cmd = RegisterModel(name=unique(), version="1", artifact=ObjectRef(key="does/not/exist.onnx"))
    _, outcome = await bus.send_command(nc, cmd, source="tests", wait=30)
    assert outcome is not None and outcome.status == "rejected"
    assert "does not exist" in (outcome.reason or "")


async def test_command_pointing_at_an_external_object_copies_it_and_leaves_the_source(
    nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    model, _ = sample_files(tmp_path)
    key = f"teams/ml/{unique()}.onnx"
    artifacts.put_bytes(key, model.read_bytes())
    cmd = RegisterModel(name=unique(), version="2.1", artifact=ObjectRef(key=key, bucket=artifacts.bucket))
    _, outcome = await bus.send_command(nc, cmd, source="tests", wait=30)
    assert outcome is not None and outcome.status == "applied"
    assert artifacts.exists(key), "an object outside incoming/ belongs to its owner"
    assert artifacts.exists(blob_key(outcome.result["digest"]))


async def test_variants_carry_lineage_and_requirements(nc: Client, artifacts: ArtifactStore, tmp_path: Path) -> None:
    model, _ = sample_files(tmp_path / "base")
    variant_file, _ = sample_files(tmp_path / "variant", seed=3)
    name = unique()
    await register(nc, artifacts, model, name, "1.0")
    cmd = RegisterVariant(
        name=name,
        version="1.0",
        variant="int8",
        artifact=ObjectRef(key=artifacts.upload_staging(variant_file).key),
        recipe={"passes": [{"type": "OnnxDynamicQuantization", "per_channel": True}]},
        metrics={"cosine_mean": 0.995, "size_ratio": 0.26},
        requirements=Requirements(min_onnxruntime="1.17", min_ram_mb=256),
    )
    _, outcome = await bus.send_command(nc, cmd, source="tests", wait=30)
    assert outcome is not None and outcome.status == "applied"
    detail = await get(nc, name, "1.0")
    (variant,) = detail.variants
    assert variant.parent_digest == detail.version.artifact.digest
    assert variant.requirements.opset == 17 and variant.requirements.min_ram_mb == 256
    assert variant.metrics["cosine_mean"] == 0.995
    events = [
        e for e, _ in await stream_messages(nc, "slmops.evt.variant.registered") if e["data"]["record"]["name"] == name
    ]
    assert len(events) == 1
    # a variant of a version that does not exist is rejected
    orphan = cmd.model_copy(
        update={"version": "9.9", "artifact": ObjectRef(key=artifacts.upload_staging(variant_file).key)}
    )
    _, outcome = await bus.send_command(nc, orphan, source="tests", wait=30)
    assert outcome is not None and outcome.status == "rejected" and "not registered" in (outcome.reason or "")


async def test_aliases_move_with_history_and_resolve(nc: Client, artifacts: ArtifactStore, tmp_path: Path) -> None:
    m1, _ = sample_files(tmp_path / "1", seed=1)
    m2, _ = sample_files(tmp_path / "2", seed=2)
    name = unique()
    await register(nc, artifacts, m1, name, "1.0")
    await register(nc, artifacts, m2, name, "2.0")
    for version in ("1.0", "2.0", "2.0"):
        _, outcome = await bus.send_command(
            nc, SetAlias(name=name, alias="stable", version=version), source="tests", wait=30
        )
        assert outcome is not None
    assert outcome.status == "unchanged"
    assert (await get(nc, name, "stable")).version.version == "2.0"
    history = await RegistryClient(nc, source="tests").aliases(name)
    assert [h.version for h in history[0].history] == ["1.0", "2.0"]
    changed = [e["data"] for e, _ in await stream_messages(nc, "slmops.evt.alias.changed") if e["data"]["name"] == name]
    assert [(c["version"], c["previous"]) for c in changed] == [("1.0", None), ("2.0", "1.0")]
    _, outcome = await bus.send_command(nc, SetAlias(name=name, alias="stable", version="3.0"), source="tests", wait=30)
    assert outcome is not None and outcome.status == "rejected"


async def test_download_url_is_presigned_and_serves_the_signed_bytes(
    nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    model, _ = sample_files(tmp_path)
    outcome = await register(nc, artifacts, model, unique(), "1")
    digest = outcome.result["digest"]
    registry = RegistryClient(nc, source="tests")
    reply = await registry.download_url(digest)
    assert "X-Amz-Signature" in reply.url and reply.expires_in_seconds > 0
    with urllib.request.urlopen(reply.url, timeout=10) as resp:
        assert resp.read() == model.read_bytes()
    with pytest.raises(NotFound, match=f"no registered artifact or evaluation set has sha256 {'f' * 64}"):
        await registry.download_url("f" * 64)


async def test_events_carry_dedup_id_and_trace_context(nc: Client, artifacts: ArtifactStore, tmp_path: Path) -> None:
    model, _ = sample_files(tmp_path)
    name = unique()
    await register(nc, artifacts, model, name, "1")
    ((event, headers),) = [
        (e, h)
        for e, h in await stream_messages(nc, "slmops.evt.model.registered")
        if e["data"]["record"]["name"] == name
    ]
    assert headers["Nats-Msg-Id"] == event["id"] and len(event["id"]) == 64
    assert headers.get("traceparent", "").startswith("00-")
    assert event["source"] == "registry" and event["schema_version"] == 1


def _keys(store: ArtifactStore) -> list[str]:
    return [o.object_name for o in store._client.list_objects(store.bucket, recursive=True)]


async def test_redelivery_after_a_crash_between_record_and_event_announces_once(
    nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """The state a crash leaves behind: the record is written and the staging upload consumed,
    but the event was never published. The redelivered command must announce, not reject."""
    from services.registry.adapters.nats_kv import version_key
    from shared.messages.envelope import new_id
    from shared.messages.registry import ModelVersionRecord

    model, _ = sample_files(tmp_path)
    donor = await register(nc, artifacts, model, unique(), "1")
    kv = await nc.jetstream().key_value("models")
    donor_record = ModelVersionRecord.model_validate_json((await kv.get(version_key(donor.result["name"], "1"))).value)
    name, command_id = unique("crashed"), new_id()
    crashed = donor_record.model_copy(update={"name": name, "command_id": command_id})
    await kv.create(version_key(name, "1"), crashed.model_dump_json().encode())

    cmd = RegisterModel(name=name, version="1", artifact=ObjectRef(key="incoming/already-consumed/model.onnx"))
    _, outcome = await bus.send_command(nc, cmd, source="tests", wait=30, command_id=command_id)
    assert outcome is not None and outcome.status == "applied", outcome
    events = [
        e for e, _ in await stream_messages(nc, "slmops.evt.model.registered") if e["data"]["record"]["name"] == name
    ]
    assert len(events) == 1 and events[0]["data"]["record"]["command_id"] == command_id
    reply = await RegistryClient(nc, source="tests").download_url(crashed.artifact.digest)
    assert reply.digest == crashed.artifact.digest


async def test_an_evaluation_set_is_served_by_digest_as_a_signed_smoke_input(
    nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    model, eval_set = sample_files(tmp_path)
    name = unique()
    await register(nc, artifacts, model, name, "1", eval_set=eval_set)
    digest = sha256_file(eval_set)[0]
    registry = RegistryClient(nc, source="tests")
    reply = await registry.download_url(digest)
    assert reply.size_bytes == eval_set.stat().st_size
    with urllib.request.urlopen(reply.url, timeout=10) as resp:
        assert resp.read() == eval_set.read_bytes()
    public = await registry.public_key()
    assert signing.verify_digest(public.public_key_pem, digest, reply.signature)


class TestKvRecordStore(RecordStoreContract):
    """The record store contract against JetStream KV, the one the in-memory store is held to."""

    @pytest.fixture
    async def records(self, nc: Client) -> AsyncIterator[KvRecordStore]:
        js = nc.jetstream()
        bucket = f"contract-{uuid.uuid4().hex[:10]}"
        kv = await js.create_key_value(KeyValueConfig(bucket=bucket, history=5))
        yield KvRecordStore(kv, js=js, bucket=bucket)
        await js.delete_key_value(bucket)


# --- integrity: whole outcomes or none, caps, namespaces, buckets, bombs --------------------------


def raw_command(type_: str, data_json: str, marker: str) -> bytes:
    """A command as any client could send it: JSON text, so literals such as NaN go through."""
    return (
        f'{{"type": "{type_}", "schema_version": 1, "id": "{marker}", "time": "2026-01-01T00:00:00Z", '
        f'"source": "tests", "data": {data_json}}}'
    ).encode()


async def dead_letter_of(nc: Client, marker: str) -> dict[str, str]:
    """The one DLQ entry whose original body names `marker`, once it has arrived."""
    for _ in range(100):
        entries = await dlq_entries(nc, containing=marker)
        if entries:
            (entry,) = entries
            return entry
        await asyncio.sleep(0.1)
    raise AssertionError(f"no DLQ entry for {marker}")


@pytest.mark.parametrize("literal", ["NaN", "Infinity"])
async def test_a_non_finite_metric_ends_in_the_dlq_and_leaves_no_record(
    nc: Client, artifacts: ArtifactStore, tmp_path: Path, literal: str
) -> None:
    model, _ = sample_files(tmp_path / "base")
    variant_file, _ = sample_files(tmp_path / "variant", seed=3)
    name = unique()
    await register(nc, artifacts, model, name, "1.0")
    staged = artifacts.upload_staging(variant_file)
    marker = unique("nan")
    data = (
        f'{{"name": "{name}", "version": "1.0", "variant": "int8", "artifact": {{"key": "{staged.key}"}}, '
        f'"metrics": {{"cosine_mean": {literal}}}}}'
    )
    await nc.jetstream().publish(
        "slmops.cmd.model.variant.register", raw_command("model.variant.register", data, marker)
    )
    entry = await dead_letter_of(nc, marker)
    assert literal in entry["Slmops-Dlq-Reason"] or "finite" in entry["Slmops-Dlq-Reason"]
    detail = await get(nc, name, "1.0")  # get answers, and there is no variant
    assert detail.variants == []
    kv = await nc.jetstream().key_value("models")
    with pytest.raises(KeyNotFoundError):
        await kv.get(variant_key(name, "1.0", "int8"))


async def test_labels_over_their_cap_end_in_the_dlq_and_write_nothing(
    nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    model, _ = sample_files(tmp_path)
    name = unique()
    staged = artifacts.upload_staging(model)
    # built unchecked, as a client that does not use these models could send it
    cmd = RegisterModel.model_construct(
        name=name,
        version="1.0",
        artifact=ObjectRef(key=staged.key),
        eval_set=None,
        labels={f"k{i}": "v" * 100 for i in range(2000)},  # ~220 KB: far over the caps, under max_payload
        description="",
    )
    command_id, outcome = await bus.send_command(nc, cmd, source="tests", wait=30)
    assert outcome is not None and outcome.status == "rejected"
    assert "labels: Dictionary should have at most 32 items" in (outcome.reason or "")
    entry = await dead_letter_of(nc, name)
    assert "labels" in entry["Slmops-Dlq-Reason"]
    with pytest.raises(NotFound):
        await get(nc, name)
    events = [e for e, _ in await stream_messages(nc, "slmops.evt.model.registered") if name in json.dumps(e)]
    assert events == []


async def test_a_version_cannot_shadow_an_alias(nc: Client, artifacts: ArtifactStore, tmp_path: Path) -> None:
    m1, _ = sample_files(tmp_path / "1", seed=1)
    m2, _ = sample_files(tmp_path / "2", seed=2)
    name = unique()
    await register(nc, artifacts, m1, name, "1.0")
    _, outcome = await bus.send_command(nc, SetAlias(name=name, alias="stable", version="1.0"), source="tests", wait=30)
    assert outcome is not None and outcome.status == "applied"
    staged = artifacts.upload_staging(m2)
    marker = unique("shadow")
    data = f'{{"name": "{name}", "version": "stable", "artifact": {{"key": "{staged.key}"}}}}'
    await nc.jetstream().publish("slmops.cmd.model.register", raw_command("model.register", data, marker))
    entry = await dead_letter_of(nc, marker)
    assert "version: Value error, a version starts with a digit" in entry["Slmops-Dlq-Reason"]
    assert (await get(nc, name, "stable")).version.version == "1.0", "the alias still resolves to its version"
    assert (await RegistryClient(nc, source="tests").list_models(name))[0].versions == ["1.0"]


async def test_a_command_naming_another_bucket_is_rejected_before_anything_is_read(
    nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    model, _ = sample_files(tmp_path)
    bucket = f"other-{uuid.uuid4().hex[:8]}"
    artifacts._client.make_bucket(bucket)  # the registry's credentials reach it
    artifacts._client.fput_object(bucket, "export.onnx", str(model))
    cmd = RegisterModel(name=unique(), version="1", artifact=ObjectRef(key="export.onnx", bucket=bucket))
    _, outcome = await bus.send_command(nc, cmd, source="tests", wait=30)
    assert outcome is not None and outcome.status == "rejected"
    assert f"not from {bucket!r}" in (outcome.reason or "") and artifacts.bucket in (outcome.reason or "")
    with pytest.raises(NotFound):
        await get(nc, cmd.name)


async def test_an_evaluation_set_bomb_is_rejected_with_a_reason_and_leaves_nothing(
    nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    from services.registry.settings import DEFAULT_EVAL_SET_DECOMPRESSED_BYTES
    from tests.unit.registry.npz_bombs import zip_bomb

    model, _ = sample_files(tmp_path)
    bomb = zip_bomb(tmp_path / "bomb.npz", inflated_bytes=DEFAULT_EVAL_SET_DECOMPRESSED_BYTES + 64 * 1024**2)
    assert bomb.stat().st_size < 2 * 1024**2
    name = unique()
    before = set(_keys(artifacts))
    outcome = await register(nc, artifacts, model, name, "1", eval_set=bomb)
    assert outcome.status == "rejected"
    assert f"the limit is {DEFAULT_EVAL_SET_DECOMPRESSED_BYTES}" in (outcome.reason or "")
    assert set(_keys(artifacts)) - before == set()
    assert isinstance(await RegistryClient(nc, source="tests").list_models(), list), "and the registry still answers"


async def test_get_of_a_broken_record_answers_with_an_error(
    nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """A record as the NaN probe left it (its metric stored as null): get answers, naming the key."""
    from services.registry.adapters.nats_kv import version_key

    model, _ = sample_files(tmp_path)
    name = unique()
    await register(nc, artifacts, model, name, "1")
    kv = await nc.jetstream().key_value("models")
    key = version_key(name, "1")
    raw = json.loads((await kv.get(key)).value)
    await kv.put(key, json.dumps(raw | {"labels": {"task": None}}).encode())
    with pytest.raises(SlmopsError, match=f"{key}.*unreadable") as broken:
        await get(nc, name, "1")
    assert broken.value.remote_code == "internal"
