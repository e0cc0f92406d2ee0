"""The registry's ports in memory, so its use cases run in a test without NATS or S3.

`MemoryRecordStore` keeps records the way `KvRecordStore` does, because the service's guarantees
rest on those semantics: values are stored as the records' JSON (a record that does not survive the
round trip fails here as it would in KV); `create_*` never overwrites and (re)writes the digest
index, so a replay repairs it; an alias is written with compare-and-set on a revision that every
write advances, as a KV bucket's sequence does; `find_blob` looks a digest up in the index, for
models, variants and evaluation sets alike. `MemoryBlobs` is the platform's one in-memory artifact
store (`shared.memory_artifacts`), the same one the optimizer's tests use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeVar

from pydantic import BaseModel

from services.registry.adapters.codec import load
from services.registry.adapters.desired_kv import grants_of
from services.registry.ports import RecordStore, StoredBlob
from shared.memory_artifacts import MemoryArtifactStore
from shared.messages.registry import AliasRecord, ModelVersionRecord, VariantRecord

__all__ = ["MemoryBlobs", "MemoryRecordStore"]

R = TypeVar("R", bound=BaseModel)
Key = tuple[str, ...]  # (name, version), (name, version, variant) or (name, alias)
Holder = Literal["version", "variant", "eval_set"]

MemoryBlobs = MemoryArtifactStore

if TYPE_CHECKING:  # mypy holds the shared store to this service's port
    from services.registry.ports import Blobs

    _blobs: Blobs = MemoryBlobs()


class MemoryRecordStore(RecordStore):
    """`RecordStore` in dictionaries, with the KV store's create, compare-and-set and index rules.

    No method awaits between reading and writing, so each is atomic on the event loop, as each KV
    operation is on the server.
    """

    def __init__(self) -> None:
        self._versions: dict[Key, str] = {}
        self._variants: dict[Key, str] = {}
        self._aliases: dict[Key, tuple[str, int]] = {}
        self._index: dict[str, tuple[Holder, Key]] = {}  # digest -> the record that holds it
        self._revision = 0

    async def get_version(self, name: str, version: str) -> ModelVersionRecord | None:
        return _load(self._versions.get((name, version)), ModelVersionRecord)

    async def create_version(self, record: ModelVersionRecord) -> bool:
        where = (record.name, record.version)
        created = self._create(self._versions, where, record)
        if _parse(self._versions[where], ModelVersionRecord).artifact.digest == record.artifact.digest:
            self._index[record.artifact.digest] = ("version", where)
        if record.eval_set is not None:  # devices fetch it by digest as a smoke input
            self._index[record.eval_set.digest] = ("eval_set", where)
        return created

    async def list_versions(self, name: str | None = None) -> list[ModelVersionRecord]:
        return [_parse(raw, ModelVersionRecord) for key, raw in self._versions.items() if name in (None, key[0])]

    async def get_variant(self, name: str, version: str, variant: str) -> VariantRecord | None:
        return _load(self._variants.get((name, version, variant)), VariantRecord)

    async def create_variant(self, record: VariantRecord) -> bool:
        where = (record.name, record.version, record.variant)
        created = self._create(self._variants, where, record)
        if _parse(self._variants[where], VariantRecord).artifact.digest == record.artifact.digest:
            self._index[record.artifact.digest] = ("variant", where)
        return created

    async def list_variants(self, name: str, version: str) -> list[VariantRecord]:
        return [_parse(raw, VariantRecord) for key, raw in self._variants.items() if key[:2] == (name, version)]

    async def get_alias(self, name: str, alias: str) -> tuple[AliasRecord, int] | None:
        stored = self._aliases.get((name, alias))
        return None if stored is None else (_parse(stored[0], AliasRecord), stored[1])

    async def put_alias(self, record: AliasRecord, *, revision: int | None) -> bool:
        """Compare-and-set: False if the alias exists (`revision` None) or changed since `revision`."""
        where = (record.name, record.alias)
        current = self._aliases.get(where)
        if (current[1] if current else None) != revision:
            return False
        self._aliases[where] = (record.model_dump_json(), self._next_revision())
        return True

    async def list_aliases(self, name: str) -> list[AliasRecord]:
        return [_parse(raw, AliasRecord) for key, (raw, _) in self._aliases.items() if key[0] == name]

    async def find_blob(self, digest: str) -> StoredBlob | None:
        holder, where = self._index.get(digest, ("version", ()))
        if holder == "eval_set":
            version = _load(self._versions.get(where), ModelVersionRecord)
            if version is None or version.eval_set is None or version.eval_set.digest != digest:
                return None
            return StoredBlob(key=version.eval_set.key, size_bytes=version.eval_set.size_bytes, signature=None)
        record: ModelVersionRecord | VariantRecord | None = (
            _load(self._variants.get(where), VariantRecord)
            if holder == "variant"
            else _load(self._versions.get(where), ModelVersionRecord)
        )
        if record is None or record.artifact.digest != digest:
            return None
        a = record.artifact
        return StoredBlob(key=a.key, size_bytes=a.size_bytes, signature=a.signature)

    def _create(self, table: dict[Key, str], where: Key, record: BaseModel) -> bool:
        """Write `record` at `where` unless something is there already: records are never overwritten."""
        if where in table:
            return False
        table[where] = record.model_dump_json()
        self._next_revision()
        return True

    def _next_revision(self) -> int:
        """Every write advances one sequence, as in a KV bucket (whose revisions are stream sequences)."""
        self._revision += 1
        return self._revision


def _load(raw: str | None, model: type[R]) -> R | None:
    return None if raw is None else _parse(raw, model)


def _parse(raw: str, model: type[R]) -> R:
    return load(raw, model, key=f"memory:{model.__name__}")


class MemoryDeviceGrants:
    """`DeviceGrants` over a dict of device id → the desired state's JSON, as the `desired` bucket holds it."""

    def __init__(self, desired: dict[str, bytes] | None = None) -> None:
        self.desired: dict[str, bytes] = dict(desired or {})

    async def downloadable(self, device_id: str) -> frozenset[str]:
        return grants_of(self.desired.get(device_id))
