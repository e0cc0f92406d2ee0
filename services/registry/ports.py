"""The registry's collaborators, as Protocols: its record store and the artifact store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from shared.artifacts import StoredObject
from shared.messages.registry import AliasRecord, ModelVersionRecord, VariantRecord


@dataclass(frozen=True, kw_only=True)
class StoredBlob:
    """A blob the registry serves by digest: a model or variant (signed) or an evaluation set."""

    key: str
    size_bytes: int
    signature: str | None


class RecordStore(Protocol):
    """Where registry records live (JetStream KV in production). `create_*` never overwrites."""

    async def get_version(self, name: str, version: str) -> ModelVersionRecord | None: ...
    async def create_version(self, record: ModelVersionRecord) -> bool: ...
    async def list_versions(self, name: str | None = None) -> list[ModelVersionRecord]: ...
    async def get_variant(self, name: str, version: str, variant: str) -> VariantRecord | None: ...
    async def create_variant(self, record: VariantRecord) -> bool: ...
    async def list_variants(self, name: str, version: str) -> list[VariantRecord]: ...
    async def get_alias(self, name: str, alias: str) -> tuple[AliasRecord, int] | None: ...
    async def put_alias(self, record: AliasRecord, *, revision: int | None) -> bool: ...
    async def list_aliases(self, name: str) -> list[AliasRecord]: ...
    async def find_blob(self, digest: str) -> StoredBlob | None: ...


class DeviceGrants(Protocol):
    """What a device may download: the digests its desired state names (model and smoke input)."""

    async def downloadable(self, device_id: str) -> frozenset[str]: ...


class Blobs(Protocol):
    """The subset of the artifact store the registry uses (blocking calls)."""

    bucket: str

    @property
    def presign_ttl(self) -> timedelta: ...

    def download(
        self, key: str, dest: Path, *, bucket: str | None = None, max_bytes: int | None = None
    ) -> StoredObject: ...
    def put_blob(self, path: Path, *, digest: str) -> tuple[StoredObject, bool]: ...
    def delete(self, key: str, *, bucket: str | None = None) -> None: ...
    def presigned_get(self, key: str, *, ttl: timedelta | None = None) -> str: ...
