"""The optimizer's collaborators, as Protocols: the registry (over the bus) and the artifact store."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from shared.artifacts import StoredObject
from shared.messages.common import CommandOutcome
from shared.messages.registry import ModelDetail, RegisterVariant


class Registry(Protocol):
    async def get_model(self, name: str, ref: str) -> ModelDetail: ...
    async def register_variant(self, cmd: RegisterVariant) -> CommandOutcome: ...


class Blobs(Protocol):
    """Blocking calls; the service runs them in threads."""

    def download(
        self, key: str, dest: Path, *, bucket: str | None = None, max_bytes: int | None = None
    ) -> StoredObject: ...
    def upload_staging(self, path: Path) -> StoredObject: ...
