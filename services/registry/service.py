"""Registry use cases: load → decide (domain) → save → return the event to publish.

Nothing here knows NATS. Blocking work (S3 transfers, ONNX checks) runs in worker threads so
the service keeps answering requests while it validates a large model.

"A command applies wholly or leaves nothing": the record and the event that announces it are built
and checked (`integrity`) before anything is stored; a record is written only after its blobs are
stored and signed; a failure after a blob was stored deletes the blobs this call created (never ones
that were there already, which other records may share); a staging upload under `incoming/` is
deleted once the command is decided, and kept on a transient failure so the redelivered command can
use it. A command that names a bucket other than the platform's or an allow-listed one is refused
before anything is read.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.registry import domain, integrity
from services.registry.errors import ArtifactMissing, InvalidEvalSet, InvalidModel, NotFound, Rejected, Unavailable
from services.registry.eval_outputs import measure_eval_outputs
from services.registry.inspection import MAX_EVAL_SET_BYTES, inspect_eval_set, inspect_model
from services.registry.ports import Blobs, DeviceGrants, RecordStore
from shared import signing
from shared.artifacts import (
    STAGING_PREFIX,
    ArtifactNotFound,
    ArtifactTooLarge,
    StorageUnavailable,
    StoredObject,
    blob_key,
)
from shared.errors import Forbidden
from shared.messages.common import ObjectRef
from shared.messages.envelope import Message
from shared.messages.registry import (
    MAX_MODEL_BYTES,
    AliasChanged,
    AliasRecord,
    Artifact,
    DownloadUrl,
    EvalOutputs,
    EvalSet,
    ModelDetail,
    ModelRegistered,
    ModelSummary,
    ModelVersionRecord,
    OnnxInfo,
    PublicKey,
    RegisterModel,
    RegisterVariant,
    Requirements,
    SetAlias,
    VariantRecord,
    VariantRegistered,
)
from shared.outcomes import Outcome

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class _Created:
    """Blobs this call stored, to delete if the registration fails afterwards."""

    keys: list[str] = field(default_factory=list)


class RegistryService:
    def __init__(
        self,
        *,
        store: RecordStore,
        blobs: Blobs,
        signing_key: Ed25519PrivateKey,
        grants: DeviceGrants | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        admission: domain.Admission | None = None,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._key = signing_key
        self._grants = grants
        self._clock = clock
        self._admission = admission or domain.Admission()

    # --- commands ---------------------------------------------------------------------------

    async def register_model(self, cmd: RegisterModel, *, command_id: str) -> Outcome:
        what = f"{cmd.name} {cmd.version}"
        with tempfile.TemporaryDirectory(prefix="slmops-registry-") as tmp:
            async with self._consuming(cmd.artifact, cmd.eval_set):
                self._check_buckets(cmd.artifact, cmd.eval_set)
                existing = await self._store.get_version(cmd.name, cmd.version)
                if domain.is_replay(existing, command_id=command_id):
                    # The record is ours from before a crash; its staging upload may be gone already.
                    return await self._settled(domain.Decision.REPLAY, existing)
                model_file, eval_file = Path(tmp) / "model.onnx", Path(tmp) / "eval.npz"
                fetched = await self._fetch(cmd.artifact, model_file, MAX_MODEL_BYTES, "model")
                decision = domain.decide_registration(existing, digest=fetched.digest, command_id=command_id, what=what)
                if existing is not None:
                    return await self._settled(decision, existing)
                info = await _inspect(model_file)
                eval_set = await self._eval_set(cmd.eval_set, eval_file, info)
                eval_outputs = None
                if eval_set is not None:
                    try:
                        eval_outputs = await asyncio.to_thread(measure_eval_outputs, model_file, eval_file)
                    except InvalidEvalSet as exc:
                        raise InvalidEvalSet(f"the model does not run on its evaluation set: {exc}") from None
                # Everything that will be written and published is built and checked before anything is.
                record = integrity.build(
                    lambda: ModelVersionRecord(
                        name=cmd.name,
                        version=cmd.version,
                        artifact=self._artifact(fetched),
                        onnx=info,
                        eval_set=eval_set,
                        eval_outputs=eval_outputs,
                        labels=cmd.labels,
                        description=cmd.description,
                        registered_at=self._clock(),
                        command_id=command_id,
                    ),
                    what=what,
                )
                outcome = _announced(record, what=what)
                created = _Created()
                try:
                    await self._put(model_file, fetched.digest, created)
                    if eval_set is not None:
                        await self._put(eval_file, eval_set.digest, created)
                    if not await self._store.create_version(record):
                        await self._undo(created)
                        raced = await self._store.get_version(cmd.name, cmd.version)
                        return await self._lost_race(raced, fetched.digest, command_id, what)
                except BaseException:
                    await self._undo(created)
                    raise
        log.info("model registered", extra={"model": cmd.name, "version": cmd.version, "digest": fetched.digest})
        return outcome

    async def register_variant(self, cmd: RegisterVariant, *, command_id: str) -> Outcome:
        what = f"{cmd.name} {cmd.version} variant {cmd.variant}"
        with tempfile.TemporaryDirectory(prefix="slmops-registry-") as tmp:
            async with self._consuming(cmd.artifact):
                self._check_buckets(cmd.artifact)
                parent = await self._store.get_version(cmd.name, cmd.version)
                if parent is None:
                    raise NotFound(f"cannot add variant {cmd.variant!r}: {cmd.name} {cmd.version} is not registered")
                existing = await self._store.get_variant(cmd.name, cmd.version, cmd.variant)
                if domain.is_replay(existing, command_id=command_id):
                    return await self._settled(domain.Decision.REPLAY, existing)
                siblings = [
                    v for v in await self._store.list_variants(cmd.name, cmd.version) if v.variant != cmd.variant
                ]
                domain.check_variant_room(siblings, variant=cmd.variant, what=f"{cmd.name} {cmd.version}")
                variant_file = Path(tmp) / "variant.onnx"
                fetched = await self._fetch(cmd.artifact, variant_file, MAX_MODEL_BYTES, "variant")
                decision = domain.decide_registration(existing, digest=fetched.digest, command_id=command_id, what=what)
                if existing is not None:
                    return await self._settled(decision, existing)
                info = await _inspect(variant_file)
                eval_outputs = await self._variant_eval_outputs(parent, variant_file, Path(tmp) / "eval.npz")
                record = integrity.build(
                    lambda: VariantRecord(
                        name=cmd.name,
                        version=cmd.version,
                        variant=cmd.variant,
                        parent_digest=parent.artifact.digest,
                        artifact=self._artifact(fetched),
                        onnx=info,
                        recipe=cmd.recipe,
                        metrics=cmd.metrics,
                        requirements=_complete_requirements(cmd.requirements, info),
                        eval_outputs=eval_outputs,
                        registered_at=self._clock(),
                        command_id=command_id,
                    ),
                    what=what,
                )
                outcome = _announced(record, what=what)
                integrity.check_detail(parent, [*siblings, record], what=what)
                created = _Created()
                try:
                    await self._put(variant_file, fetched.digest, created)
                    if not await self._store.create_variant(record):
                        await self._undo(created)
                        raced = await self._store.get_variant(cmd.name, cmd.version, cmd.variant)
                        return await self._lost_race(raced, fetched.digest, command_id, what)
                except BaseException:
                    await self._undo(created)
                    raise
        return outcome

    async def set_alias(self, cmd: SetAlias, *, command_id: str) -> Outcome:
        what = f"alias {cmd.alias!r} of {cmd.name}"
        if await self._store.get_version(cmd.name, cmd.version) is None:
            raise NotFound(f"cannot point alias {cmd.alias!r} at {cmd.name} {cmd.version}: no such version")
        for _ in range(5):  # compare-and-set loop against concurrent alias changes
            current = await self._store.get_alias(cmd.name, cmd.alias)
            existing, revision = current if current else (None, None)
            if existing is None:
                domain.check_alias_room(await self._store.list_aliases(cmd.name), alias=cmd.alias, name=cmd.name)
            record, decision = domain.apply_alias(
                existing, name=cmd.name, alias=cmd.alias, version=cmd.version, at=self._clock(), command_id=command_id
            )
            if decision is domain.Decision.UNCHANGED:
                return Outcome(status="unchanged", result={"alias": cmd.alias, "version": cmd.version})
            change = next(c for c in record.history if c.command_id == command_id)
            event = AliasChanged(name=cmd.name, alias=cmd.alias, version=change.version, previous=change.previous)
            event_id = domain.registered_event_id("alias.changed", command_id)
            integrity.check_event(event, event_id, what=what)  # built and checked before the write
            if decision is domain.Decision.CREATE:
                integrity.check_record(record, what=what)
                if not await self._store.put_alias(record, revision=revision):
                    continue
            return Outcome(
                status="applied",
                events=[(event, event_id)],
                result={"alias": cmd.alias, "version": cmd.version, "previous": change.previous},
            )
        raise Unavailable(f"alias {cmd.name}/{cmd.alias} kept changing under us; retry")

    # --- queries ----------------------------------------------------------------------------

    async def list_models(self, name: str | None = None) -> list[ModelSummary]:
        versions = await self._store.list_versions(name)
        by_name: dict[str, list[ModelVersionRecord]] = {}
        for v in versions:
            by_name.setdefault(v.name, []).append(v)
        summaries = []
        for model_name in sorted(by_name):
            records = sorted(by_name[model_name], key=lambda r: r.registered_at)
            aliases = await self._store.list_aliases(model_name)
            summaries.append(
                ModelSummary(
                    name=model_name,
                    versions=[r.version for r in records],
                    aliases={a.alias: a.version for a in aliases},
                    latest=records[-1].version,
                )
            )
        return summaries

    async def get_model(self, name: str, ref: str = domain.LATEST) -> ModelDetail:
        versions = await self._store.list_versions(name)
        if not versions:
            raise NotFound(f"no model named {name!r}")
        aliases = await self._store.list_aliases(name)
        version = domain.resolve_ref(ref, versions=versions, aliases=aliases)
        variants = await self._store.list_variants(name, version.version)
        return ModelDetail(
            version=version,
            variants=sorted(variants, key=lambda v: v.variant),
            aliases=sorted(a.alias for a in aliases if a.version == version.version),
        )

    async def aliases(self, name: str) -> list[AliasRecord]:
        return sorted(await self._store.list_aliases(name), key=lambda a: a.alias)

    async def download_url(self, digest: str, *, device_id: str | None = None) -> DownloadUrl:
        """A presigned URL for `digest`. A device (`device_id`: it asked on its own subject) gets one
        only for what its desired state names, its model and its smoke input, so stolen device
        credentials cannot fetch the rest of the catalogue."""
        if device_id is not None:
            if self._grants is None:
                raise Forbidden("this registry does not serve devices (it has no view of the desired states)")
            if digest not in await self._grants.downloadable(device_id):
                raise Forbidden(f"device {device_id}'s desired state does not name sha256 {digest}")
        blob = await self._store.find_blob(digest)
        if blob is None:
            raise NotFound(f"no registered artifact or evaluation set has sha256 {digest}")
        url = await _blocking(self._blobs.presigned_get, blob.key)
        return DownloadUrl(
            url=url,
            digest=digest,
            size_bytes=blob.size_bytes,
            # Models carry the signature made at registration; an evaluation set (a smoke input) is
            # vouched for the same way, signed when asked for.
            signature=blob.signature or signing.sign_digest(self._key, digest),
            expires_in_seconds=int(self._blobs.presign_ttl.total_seconds()),
        )

    async def public_key(self) -> PublicKey:
        pem = signing.public_key_pem(self._key)
        return PublicKey(public_key_pem=pem, key_id=signing.key_id(pem))

    # --- steps ------------------------------------------------------------------------------

    async def _fetch(self, ref: ObjectRef, dest: Path, limit: int, what: str) -> StoredObject:
        try:
            return await _blocking(self._blobs.download, ref.key, dest, bucket=ref.bucket, max_bytes=limit)
        except ArtifactNotFound as exc:
            raise ArtifactMissing(f"the {what} object does not exist: {exc}") from None
        except ArtifactTooLarge:
            raise InvalidModel(f"the {what} is larger than {limit} bytes") from None

    def _check_buckets(self, *refs: ObjectRef | None) -> None:
        domain.check_buckets(list(refs), platform=self._blobs.bucket, allowed=self._admission.allowed_buckets)

    def _artifact(self, fetched: StoredObject) -> Artifact:
        """The signed record of bytes that will be stored under their content address."""
        return Artifact(
            digest=fetched.digest,
            size_bytes=fetched.size_bytes,
            key=blob_key(fetched.digest),
            signature=signing.sign_digest(self._key, fetched.digest),
        )

    async def _put(self, path: Path, digest: str, created: _Created) -> None:
        stored, new = await _blocking(self._blobs.put_blob, path, digest=digest)
        if new:
            created.keys.append(stored.key)

    async def _eval_set(self, ref: ObjectRef | None, dest: Path, info: OnnxInfo) -> EvalSet | None:
        """The checked evaluation set (downloaded to `dest`, not stored yet), or None without one."""
        if ref is None:
            return None
        fetched = await self._fetch(ref, dest, MAX_EVAL_SET_BYTES, "evaluation set")
        return await asyncio.to_thread(
            inspect_eval_set,
            dest,
            digest=fetched.digest,
            key=blob_key(fetched.digest),
            inputs=info.inputs,
            max_decompressed_bytes=self._admission.eval_set_max_decompressed_bytes,
        )

    async def _variant_eval_outputs(
        self, parent: ModelVersionRecord, variant_file: Path, eval_file: Path
    ) -> EvalOutputs | None:
        """The variant's outputs on its version's evaluation set (None when the version has none).

        Raises:
            InvalidModel: the variant does not run on it (not a drop-in for its version).
            ArtifactMissing: the stored evaluation set is gone or is not the recorded bytes.
        """
        if parent.eval_set is None:
            return None
        stored = parent.eval_set
        fetched = await self._fetch(ObjectRef(key=stored.key), eval_file, MAX_EVAL_SET_BYTES, "evaluation set")
        if fetched.digest != stored.digest:
            raise ArtifactMissing(
                f"the stored evaluation set of {parent.name} {parent.version} is not the recorded bytes "
                f"(sha256 {fetched.digest}, recorded {stored.digest})"
            )
        try:
            return await asyncio.to_thread(measure_eval_outputs, variant_file, eval_file)
        except InvalidEvalSet as exc:
            raise InvalidModel(
                f"the variant does not run on {parent.name} {parent.version}'s evaluation set: {exc}"
            ) from None

    async def _settled(self, decision: domain.Decision, record: ModelVersionRecord | VariantRecord) -> Outcome:
        """The outcome for an id that already exists: a replay re-announces, a repeat is a no-op."""
        if decision is domain.Decision.REPLAY:
            # The record may have been written just before a crash: repair the digest index too.
            if isinstance(record, VariantRecord):
                await self._store.create_variant(record)
            else:
                await self._store.create_version(record)
            return _registered(record)
        return Outcome(status="unchanged", result=_summary(record))

    async def _lost_race(
        self, raced: ModelVersionRecord | VariantRecord | None, digest: str, command_id: str, what: str
    ) -> Outcome:
        """Another writer created the record between our read and our create: decide against theirs."""
        if raced is None:
            raise Unavailable(f"{what} changed while it was being registered; retry")
        decision = domain.decide_registration(raced, digest=digest, command_id=command_id, what=what)
        return await self._settled(decision, raced)

    async def _undo(self, created: _Created) -> None:
        for key in created.keys:
            try:
                await _blocking(self._blobs.delete, key)
            except Unavailable:
                log.warning("could not delete blob after a failed registration", extra={"key": key})
        created.keys.clear()

    def _consuming(self, *refs: ObjectRef | None) -> _StagingCleanup:
        return _StagingCleanup(self._blobs, [r for r in refs if r is not None])


class _StagingCleanup:
    """Deletes staging uploads once the command is decided (success or rejection), not on a
    transient failure, when the redelivered command will need them again."""

    def __init__(self, blobs: Blobs, refs: list[ObjectRef]) -> None:
        self._blobs = blobs
        self._refs = [r for r in refs if r.bucket in (None, blobs.bucket) and r.key.startswith(STAGING_PREFIX)]

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is not None and not isinstance(exc, Rejected):
            return
        for ref in self._refs:
            try:
                await _blocking(self._blobs.delete, ref.key)
            except Unavailable:  # the bucket's lifecycle rule expires it later
                log.warning("could not delete staging upload", extra={"key": ref.key})


def _registered(record: ModelVersionRecord | VariantRecord) -> Outcome:
    if isinstance(record, VariantRecord):
        event: Message = VariantRegistered(record=record)
        event_id = domain.registered_event_id(
            "variant.registered", record.name, record.version, record.variant, record.artifact.digest
        )
    else:
        event = ModelRegistered(record=record)
        event_id = domain.registered_event_id("model.registered", record.name, record.version, record.artifact.digest)
    return Outcome(status="applied", events=[(event, event_id)], result=_summary(record))


def _summary(record: ModelVersionRecord | VariantRecord) -> dict[str, Any]:
    summary: dict[str, Any] = {"name": record.name, "version": record.version, "digest": record.artifact.digest}
    if isinstance(record, VariantRecord):
        summary["variant"] = record.variant
    return summary


def _complete_requirements(given: Requirements, info: OnnxInfo) -> Requirements:
    """Fill what the file itself tells: the default-domain opset and the contrib ops it uses
    (validated again, so the union stays within the record's caps)."""
    contrib = sorted(set(given.contrib_ops) | {op for op in info.op_types if op.startswith("com.microsoft.")})
    return Requirements.model_validate(
        given.model_dump() | {"opset": given.opset or info.opsets.get(""), "contrib_ops": contrib}
    )


def _announced(record: ModelVersionRecord | VariantRecord, *, what: str) -> Outcome:
    """The outcome announcing `record`, once the record and its event are known to be publishable."""
    integrity.check_record(record, what=what)
    outcome = _registered(record)
    for event, event_id in outcome.events:
        integrity.check_event(event, event_id, what=what)
    return outcome


async def _inspect(path: Path) -> OnnxInfo:
    return await asyncio.to_thread(inspect_model, path)


async def _blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking artifact-store call in a thread, mapping an outage to `Unavailable`."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except StorageUnavailable as exc:
        raise Unavailable(str(exc)) from None
