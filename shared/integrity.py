"""Do the registry's records and the artifact store still agree? What `slmops doctor` checks and repairs.

A record in the `models` KV bucket (`shared.messages.registry`: a version's artifact and
evaluation set, a variant's artifact) names a blob by its sha256 at `blobs/sha256/<digest>`. If S3
lost it (a wiped data directory, an S3 server restarted empty) or holds other bytes, every device
told to install that version fails. The check reads every record and every blob it names (hashing
it, unless `quick`), and an alias must point at a version that exists.

Both repairs are safe by construction. `restore` puts a file's bytes at their content address, and
only when a record names that digest: the key can hold nothing else. `forget` deletes one record,
refusing a version that a variant or an alias still refers to (forget those first).
This module reads the registry's published contract only (its records and key layout), never
`services/`: the integrity of the platform's data is the platform's concern.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from shared import bus, topology
from shared.artifacts import ArtifactNotFound, ArtifactStore, ArtifactTooLarge, blob_key
from shared.digests import sha256_file
from shared.messages.registry import AliasRecord, ModelVersionRecord, VariantRecord
from shared.settings import Settings

VERSION_PREFIX, VARIANT_PREFIX, ALIAS_PREFIX = "version.", "variant.", "alias."


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One record that does not hold: which, what is wrong, and how to repair it."""

    record: str  # its key in the models bucket
    problem: str
    digest: str | None = None  # the blob it needs, when a blob is the problem
    size_bytes: int | None = None

    def repairs(self) -> list[str]:
        forget = f"slmops doctor --forget {self.record}"
        if self.digest is None:
            return [forget]
        return [
            f"slmops doctor --restore FILE   (FILE: the {self.size_bytes}-byte file with sha256 {self.digest})",
            forget,
        ]


@dataclass(frozen=True, kw_only=True)
class Blob:
    record: str
    key: str
    digest: str
    size_bytes: int


def _blobs_of(key: str, raw: bytes) -> tuple[list[Blob], ModelVersionRecord | VariantRecord | AliasRecord | None]:
    if key.startswith(VERSION_PREFIX):
        v = ModelVersionRecord.model_validate_json(raw)
        blobs = [Blob(record=key, key=v.artifact.key, digest=v.artifact.digest, size_bytes=v.artifact.size_bytes)]
        if v.eval_set is not None:
            e = v.eval_set
            blobs.append(Blob(record=key, key=e.key, digest=e.digest, size_bytes=e.size_bytes))
        return blobs, v
    if key.startswith(VARIANT_PREFIX):
        r = VariantRecord.model_validate_json(raw)
        return [Blob(record=key, key=r.artifact.key, digest=r.artifact.digest, size_bytes=r.artifact.size_bytes)], r
    if key.startswith(ALIAS_PREFIX):
        return [], AliasRecord.model_validate_json(raw)
    return [], None


async def _records(kv: KeyValue) -> dict[str, bytes]:
    try:
        keys = await kv.keys()
    except NoKeysError:
        return {}
    out: dict[str, bytes] = {}
    for key in keys:
        entry = await kv.get(key)
        if entry.value is not None:
            out[key] = entry.value
    return out


def check_blob(store: ArtifactStore, blob: Blob, *, quick: bool) -> str | None:
    """What is wrong with one blob, or None. Blocking (downloads and hashes it unless `quick`)."""
    if quick:
        return None if store.exists(blob.key) else f"its blob {blob.key} is missing"
    with tempfile.TemporaryDirectory(prefix="slmops-doctor-") as tmp:
        try:
            got = store.download(blob.key, Path(tmp) / "blob", max_bytes=blob.size_bytes)
        except ArtifactNotFound:
            return f"its blob {blob.key} is missing"
        except ArtifactTooLarge:
            return f"its blob {blob.key} is larger than the {blob.size_bytes} bytes recorded"
    if got.size_bytes != blob.size_bytes:
        return f"its blob {blob.key} has {got.size_bytes} bytes, the record says {blob.size_bytes}"
    if got.digest != blob.digest:
        return f"its blob {blob.key} has sha256 {got.digest}, the record says {blob.digest}"
    return None


async def scan(settings: Settings, *, quick: bool = False) -> tuple[int, list[Finding]]:
    """(records checked, findings): every record of the models bucket against the artifact store."""
    store = ArtifactStore.from_settings(settings)
    nc = await bus.connect(settings, name="slmops-doctor")
    try:
        records = await _records(await nc.jetstream().key_value(topology.KV_MODELS))
    finally:
        await nc.close()
    findings: list[Finding] = []
    checked = 0
    versions = {k for k in records if k.startswith(VERSION_PREFIX)}
    for key, raw in sorted(records.items()):
        try:
            blobs, record = _blobs_of(key, raw)
        except ValidationError as exc:
            findings.append(Finding(record=key, problem=f"it is not a valid record: {exc.error_count()} errors"))
            continue
        if record is None:
            continue  # an index entry (artifact.<digest>), not a record
        checked += 1
        if isinstance(record, AliasRecord) and _version_key(record.name, record.version) not in versions:
            findings.append(Finding(record=key, problem=f"it points at {record.version}, which is not registered"))
        for blob in blobs:
            problem = await asyncio.to_thread(check_blob, store, blob, quick=quick)
            if problem:
                findings.append(Finding(record=key, problem=problem, digest=blob.digest, size_bytes=blob.size_bytes))
    return checked, findings


def _version_key(name: str, version: str) -> str:
    # The registry's key layout (services/registry/adapters/nats_kv.py): a version's dots are '='.
    return f"{VERSION_PREFIX}{name}.{version.replace('.', '=')}"


async def restore(settings: Settings, path: Path) -> list[str]:
    """Put `path`'s bytes at their content address if a record needs them; the records it repairs.

    Raises:
        LookupError: no record names this file's digest, or its blob is intact (nothing was written).
    """
    digest, _ = await asyncio.to_thread(sha256_file, path)
    nc = await bus.connect(settings, name="slmops-doctor")
    try:
        records = await _records(await nc.jetstream().key_value(topology.KV_MODELS))
    finally:
        await nc.close()
    named = [b for k, raw in records.items() for b in _blobs_of_valid(k, raw) if b.digest == digest]
    if not named:
        raise LookupError(f"no record names a blob with sha256 {digest} ({path})")
    store = ArtifactStore.from_settings(settings)
    if await asyncio.to_thread(check_blob, store, named[0], quick=False) is None:
        raise LookupError(f"the blob with sha256 {digest} is intact; nothing to restore")
    await asyncio.to_thread(store.delete, blob_key(digest))  # other bytes may sit at the key
    await asyncio.to_thread(store.put_blob, path, digest=digest)
    return sorted({b.record for b in named})


def _blobs_of_valid(key: str, raw: bytes) -> list[Blob]:
    try:
        return _blobs_of(key, raw)[0]
    except ValidationError:
        return []


async def forget(settings: Settings, key: str) -> None:
    """Delete record `key` from the models bucket (a version also loses its digest index entries).

    Raises:
        LookupError: no such record.
        ValueError: a variant or an alias still refers to this version.
    """
    nc = await bus.connect(settings, name="slmops-doctor")
    try:
        kv = await nc.jetstream().key_value(topology.KV_MODELS)
        records = await _records(kv)
        if key not in records:
            raise LookupError(f"no record {key!r} in the {topology.KV_MODELS} bucket")
        blobs, record = _blobs_of(key, records[key])
        if isinstance(record, ModelVersionRecord):
            users = [k for k, raw in records.items() if _refers_to(k, raw, record)]
            if users:
                raise ValueError(f"{key} is still referred to by {', '.join(sorted(users))}: forget those first")
        await kv.delete(key)
        for blob in blobs:
            index = f"artifact.{blob.digest}"
            if records.get(index, b"").decode().split("#")[0] == key:
                await kv.delete(index)
    finally:
        await nc.close()


def _refers_to(key: str, raw: bytes, version: ModelVersionRecord) -> bool:
    if key.startswith(VARIANT_PREFIX):
        r = VariantRecord.model_validate_json(raw)
        return (r.name, r.version) == (version.name, version.version)
    if key.startswith(ALIAS_PREFIX):
        a = AliasRecord.model_validate_json(raw)
        return (a.name, a.version) == (version.name, version.version)
    return False
