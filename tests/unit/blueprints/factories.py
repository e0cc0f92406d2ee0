"""Builders for the blueprint tests: a device record and a blueprint from only the fields a test is about."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from shared.messages.blueprint import Blueprint
from shared.messages.device import DesiredState
from shared.messages.inventory import DeviceRecord
from shared.messages.registry import (
    Artifact,
    EvalSet,
    ModelDetail,
    ModelVersionRecord,
    OnnxInfo,
    Requirements,
    VariantRecord,
)
from shared.messages.rollout import StartRollout
from shared.messages.rollout_record import ArtifactChoice, DeviceGroup, RolloutRecord, WaveRecord

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def device(device_id: str, device_class: str = "rpi5", **labels: str) -> DeviceRecord:
    return DeviceRecord(
        device_id=device_id,
        device_class=device_class,
        arch="aarch64",
        ram_mb=8192,
        cpu_count=4,
        onnxruntime_version="1.20.1",
        agent_version="1",
        labels=labels,
        first_seen=T0,
        hello_at=T0,
        active_at=T0,
        last_seen=T0,
    )


def blueprint(name: str, *, labels: dict[str, str] | None = None, **spec: Any) -> Blueprint:
    """A blueprint selecting `labels`, tracking tiny-embedder@stable unless `spec` says otherwise."""
    fields: dict[str, Any] = {"selector": {"labels": labels or {}}, "model": "tiny-embedder", "track": "stable"} | spec
    return Blueprint.model_validate(
        {"apiVersion": "slmops.dev/v1", "kind": "Blueprint", "metadata": {"name": name}, "spec": fields}
    )


# --- the registry, desired states and rollouts, for the controller's tests --------------------

MODEL = "tiny-embedder"


def _digest(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def _artifact(tag: str) -> Artifact:
    digest = _digest(tag)
    return Artifact(digest=digest, size_bytes=1024, key=f"blobs/sha256/{digest}", signature="sig")


def model_detail(
    version: str, *, profiles: tuple[str, ...] = (), aliases: tuple[str, ...] = (), eval_set: bool = True
) -> ModelDetail:
    """Version `version` of tiny-embedder with one variant per profile in `profiles` (named after it)."""
    onnx = OnnxInfo(ir_version=8, opsets={"": 17}, inputs=[], outputs=[], parameters=0, op_types=[])
    record = ModelVersionRecord(
        name=MODEL,
        version=version,
        artifact=_artifact(version),
        onnx=onnx,
        eval_set=EvalSet(digest="e" * 64, size_bytes=100, key="blobs/sha256/" + "e" * 64, samples=4, arrays={})
        if eval_set
        else None,
        registered_at=T0,
        command_id="c",
    )
    variants = [
        VariantRecord(
            name=MODEL,
            version=version,
            variant=f"{profile}-int8",
            parent_digest=record.artifact.digest,
            artifact=_artifact(f"{version}-{profile}"),
            onnx=onnx,
            recipe={"profile": profile, "device_class": profile},
            requirements=Requirements(),
            registered_at=T0,
            command_id="c",
        )
        for profile in profiles
    ]
    return ModelDetail(version=record, variants=variants, aliases=list(aliases))


def desired(
    device_id: str,
    version: str,
    *,
    variant: str | None = None,
    rollout_id: str | None = None,
    config: dict[str, Any] | None = None,
) -> DesiredState:
    artifact = _artifact(f"{version}-{variant.removesuffix('-int8')}" if variant else version)
    return DesiredState(
        device_id=device_id,
        rollout_id=rollout_id,
        wave=0 if rollout_id else None,
        model=MODEL,
        version=version,
        variant=variant,
        digest=artifact.digest,
        size_bytes=artifact.size_bytes,
        signature="sig",
        config=config,
        issued_at=T0,
    )


def rollout(rollout_id: str, devices: list[str], *, state: str = "installing", version: str = "1.1.0") -> RolloutRecord:
    """A one-wave rollout of `devices` (all rpi5) in `state`."""
    return RolloutRecord(
        rollout_id=rollout_id,
        spec=StartRollout(model=MODEL, ref=version),
        model=MODEL,
        version=version,
        state=state,
        wave=0,
        artifacts=[ArtifactChoice(digest=_digest(version), size_bytes=1024, signature="sig")],
        waves=[
            WaveRecord(index=0, percent=100, groups=[DeviceGroup(device_class="rpi5", artifact=0, device_ids=devices)])
        ],
        created_at=T0,
        updated_at=T0,
    )
