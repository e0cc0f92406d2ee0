"""Registry records in the JetStream KV bucket `models`.

Keys: `version.<name>.<version>`, `variant.<name>.<version>.<variant>`, `alias.<name>.<alias>`,
and `artifact.<digest>` -> the key of a record holding that artifact, or `<version key>#eval_set`
for an evaluation set (so a device's download request is one lookup, not a scan). Dots in
versions are written as `=` (a character versions may not contain) so that a version's key is one
token and `variant.<name>.<version>.>` cannot match another version's variants.
"""

from __future__ import annotations

from typing import TypeVar

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from services.registry.adapters.codec import dump, load
from services.registry.ports import StoredBlob
from shared.messages.registry import AliasRecord, ModelVersionRecord, VariantRecord

R = TypeVar("R", bound=BaseModel)
EVAL_SET_SUFFIX = "#eval_set"


def _v(version: str) -> str:
    return version.replace(".", "=")


def version_key(name: str, version: str) -> str:
    return f"version.{name}.{_v(version)}"


def variant_key(name: str, version: str, variant: str) -> str:
    return f"variant.{name}.{_v(version)}.{variant}"


def alias_key(name: str, alias: str) -> str:
    return f"alias.{name}.{alias}"


class KvRecordStore:
    """`RecordStore` over a nats-py KeyValue handle (`js`, its JetStream context, lists keys)."""

    def __init__(self, kv: KeyValue, *, js: JetStreamContext, bucket: str) -> None:
        self._kv = kv
        self._js = js
        self._bucket = bucket

    async def get_version(self, name: str, version: str) -> ModelVersionRecord | None:
        return await self._get(version_key(name, version), ModelVersionRecord)

    async def create_version(self, record: ModelVersionRecord) -> bool:
        key = version_key(record.name, record.version)
        created = await self._create(key, record, record.artifact.digest)
        if record.eval_set is not None:  # devices fetch it by digest as a smoke input
            await self._kv.put(f"artifact.{record.eval_set.digest}", f"{key}{EVAL_SET_SUFFIX}".encode())
        return created

    async def list_versions(self, name: str | None = None) -> list[ModelVersionRecord]:
        return await self._list(f"version.{name}.*" if name else "version.*.*", ModelVersionRecord)

    async def get_variant(self, name: str, version: str, variant: str) -> VariantRecord | None:
        return await self._get(variant_key(name, version, variant), VariantRecord)

    async def create_variant(self, record: VariantRecord) -> bool:
        return await self._create(
            variant_key(record.name, record.version, record.variant), record, record.artifact.digest
        )

    async def list_variants(self, name: str, version: str) -> list[VariantRecord]:
        return await self._list(f"variant.{name}.{_v(version)}.*", VariantRecord)

    async def get_alias(self, name: str, alias: str) -> tuple[AliasRecord, int] | None:
        try:
            entry = await self._kv.get(alias_key(name, alias))
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return load(entry.value, AliasRecord, key=entry.key), int(entry.revision or 0)

    async def put_alias(self, record: AliasRecord, *, revision: int | None) -> bool:
        """Compare-and-set: False if someone else changed the alias since `revision` was read."""
        key = alias_key(record.name, record.alias)
        data = dump(record)
        try:
            if revision is None:
                await self._kv.create(key, data)
            else:
                await self._kv.update(key, data, last=revision)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def list_aliases(self, name: str) -> list[AliasRecord]:
        return await self._list(f"alias.{name}.*", AliasRecord)

    async def find_blob(self, digest: str) -> StoredBlob | None:
        try:
            entry = await self._kv.get(f"artifact.{digest}")
        except KeyNotFoundError:
            return None
        key = (entry.value or b"").decode()
        if key.endswith(EVAL_SET_SUFFIX):
            version = await self._get(key.removesuffix(EVAL_SET_SUFFIX), ModelVersionRecord)
            if version is None or version.eval_set is None or version.eval_set.digest != digest:
                return None
            return StoredBlob(key=version.eval_set.key, size_bytes=version.eval_set.size_bytes, signature=None)
        model: type[ModelVersionRecord] | type[VariantRecord] = (
            VariantRecord if key.startswith("variant.") else ModelVersionRecord
        )
        record = await self._get(key, model)
        if record is None or record.artifact.digest != digest:
            return None
        a = record.artifact
        return StoredBlob(key=a.key, size_bytes=a.size_bytes, signature=a.signature)

    async def _get(self, key: str, model: type[R]) -> R | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        return load(entry.value, model, key=key) if entry.value else None

    async def _create(self, key: str, record: BaseModel, digest: str) -> bool:
        """Create `key` unless it exists; (re)write the digest index either way, so a crash
        between the two writes is repaired by the command's redelivery."""
        try:
            await self._kv.create(key, dump(record))
            created = True
        except KeyWrongLastSequenceError:
            created = False
        existing = await self._get(key, type(record))
        if existing is not None and existing.artifact.digest == digest:  # type: ignore[attr-defined]
            await self._kv.put(f"artifact.{digest}", key.encode())
        return created

    async def _list(self, pattern: str, model: type[R]) -> list[R]:
        """Current values of the keys matching a subject wildcard.

        The keys are the bucket stream's subjects (exact, from the server's state), then each is
        read. Not a KV watcher: nats-py's watcher can end its initial values early under load
        (nats-io/nats.py#842), which made `list` answer a partial or empty catalogue. And not
        `KeyValue.keys(filters=...)`, which matches substrings, not wildcards.
        """
        prefix = f"$KV.{self._bucket}."
        info = await self._js.stream_info(f"KV_{self._bucket}", subjects_filter=prefix + pattern)
        records = []
        for subject in sorted(info.state.subjects or {}):
            record = await self._get(subject.removeprefix(prefix), model)  # None: deleted since
            if record is not None:
                records.append(record)
        return records
