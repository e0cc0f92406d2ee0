"""The optimizer's ports in memory, so its use cases run in a test without NATS, S3 or a registry.

`MemoryRegistry` answers as the registry does through `RegistryOverBus`, errors included: a version
it does not hold is `SourceNotFound`, an outage `RegistryUnavailable`, and a variant of a version it
does not hold is rejected. It never imports the registry service (services talk over the bus): it
serves the `ModelDetail` records a test gives it and keeps every `RegisterVariant` it was sent, so
a test reads what the optimizer asked for. Like the registry, it reads the staged upload itself
and its verdict names the digest of the bytes it read (what the optimizer checks against what it
built); `before_read` lets a test replace the upload in that window. `MemoryBlobs` is the
platform's one in-memory artifact store (`shared.memory_artifacts`), the same one the registry's
tests use.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from services.optimizer.errors import RegistryUnavailable, SourceNotFound
from services.optimizer.ports import Registry
from shared.artifacts import ArtifactNotFound
from shared.memory_artifacts import MemoryArtifactStore
from shared.messages.common import CommandOutcome
from shared.messages.envelope import new_id
from shared.messages.registry import ModelDetail, RegisterVariant

__all__ = ["MemoryBlobs", "MemoryRegistry"]

LATEST = "latest"

MemoryBlobs = MemoryArtifactStore

if TYPE_CHECKING:  # mypy holds the shared store to this service's port
    from services.optimizer.ports import Blobs

    _blobs: Blobs = MemoryBlobs()


class MemoryRegistry(Registry):
    """The registry as the optimizer sees it, from records held in memory.

    Attributes:
        sent: every variant registration received, in order.
        refusal: when set, every registration is rejected with this reason (the registry said no).
        available: when False, every call fails as a registry that does not answer.
        before_read: when set, called with each registration just before the staged upload is read.
    """

    def __init__(self, *details: ModelDetail, blobs: MemoryArtifactStore) -> None:
        self._details: dict[tuple[str, str], ModelDetail] = {}
        self._blobs = blobs
        self.sent: list[RegisterVariant] = []
        self.refusal: str | None = None
        self.available = True
        self.before_read: Callable[[RegisterVariant], None] | None = None
        for detail in details:
            self.add(detail)

    def add(self, detail: ModelDetail) -> None:
        """Serve `detail` for its name and version (and its aliases, and `latest`)."""
        self._details[(detail.version.name, detail.version.version)] = detail

    async def get_model(self, name: str, ref: str) -> ModelDetail:
        """A version by version string, alias or `latest`, as `registry.get` resolves it.

        Raises:
            SourceNotFound: no such model, version or alias.
            RegistryUnavailable: `available` is False.
        """
        self._answering()
        details = [d for (n, _), d in self._details.items() if n == name]
        exact = [d for d in details if d.version.version == ref]
        aliased = [d for d in details if ref in d.aliases]
        latest = [max(details, key=lambda d: d.version.registered_at)] if ref == LATEST and details else []
        for found in (exact, latest, aliased):
            if found:
                return found[0]
        raise SourceNotFound(f"{name} {ref}: no version or alias {ref!r} of model {name!r} (not_found)")

    async def register_variant(self, cmd: RegisterVariant) -> CommandOutcome:
        """Record the command, read the staged upload and give the verdict: applied with the digest read,
        or rejected (unknown version, `refusal`, no such upload).

        Raises:
            RegistryUnavailable: `available` is False (the command was not sent).
        """
        self._answering()
        self.sent.append(cmd)
        reason = self.refusal
        if (cmd.name, cmd.version) not in self._details:
            reason = f"cannot add variant {cmd.variant!r}: {cmd.name} {cmd.version} is not registered"
        if reason is not None:
            return CommandOutcome(command_id=new_id(), status="rejected", reason=reason)
        if self.before_read is not None:
            self.before_read(cmd)
        try:
            data = self._blobs.read_bytes(cmd.artifact.key, bucket=cmd.artifact.bucket)
        except ArtifactNotFound as exc:
            return CommandOutcome(command_id=new_id(), status="rejected", reason=str(exc))
        digest = hashlib.sha256(data).hexdigest()
        summary = {"name": cmd.name, "version": cmd.version, "digest": digest, "variant": cmd.variant}
        return CommandOutcome(command_id=new_id(), status="applied", result=summary)

    def _answering(self) -> None:
        if not self.available:
            raise RegistryUnavailable("no responders on slmops.rpc.registry (simulated outage)")
