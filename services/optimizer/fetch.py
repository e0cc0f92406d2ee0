"""Reading registered artifacts from S3, checked against the registry's record as they stream in.

The registry validated, signed and recorded one set of bytes per artifact (digest and size); S3 is
only where those bytes are kept, and anyone with write access to the bucket can replace an object
behind the registry's back. So every file the optimizer reads is checked against the record it
came from, and a mismatch fails the request before any candidate is built (`ArtifactMismatch`).

The check costs no second pass: the artifact store hashes the stream while writing it to disk, and
the read is capped at the recorded size, so a swapped object that is larger is refused from its
size alone (S3's stat, then the running count) without reading or storing more than the registry
accepted. A file that fails the check is deleted at once, so nothing later can load it by mistake.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.optimizer.errors import ArtifactMismatch
from services.optimizer.ports import Blobs
from shared.artifacts import ArtifactTooLarge
from shared.messages.registry import Artifact, EvalSet


@dataclass(frozen=True, kw_only=True)
class Expected:
    """What the registry's record says an artifact is: where it lives, its sha256 and size."""

    artifact: str  # in words, for the reason: "base model", "evaluation set"
    key: str
    digest: str
    size_bytes: int

    @classmethod
    def of(cls, artifact: str, record: Artifact | EvalSet) -> Expected:
        return cls(artifact=artifact, key=record.key, digest=record.digest, size_bytes=record.size_bytes)


def fetch_verified(blobs: Blobs, expected: Expected, dest: Path) -> None:
    """Download `expected.key` to `dest`, hashing as it streams; keep it only if it is the recorded file.

    Blocking (the store is); the service runs it in a thread.

    Raises:
        ArtifactMismatch: the digest or size differs from the record (`dest` is removed).
        ArtifactNotFound, StorageUnavailable: from the store, unchanged.
    """
    try:
        stored = blobs.download(expected.key, dest, max_bytes=expected.size_bytes)
    except ArtifactTooLarge:
        dest.unlink(missing_ok=True)
        raise ArtifactMismatch(
            artifact=expected.artifact,
            key=expected.key,
            expected=expected.digest,
            actual=None,
            expected_size=expected.size_bytes,
            actual_size=None,
        ) from None
    if stored.digest != expected.digest or stored.size_bytes != expected.size_bytes:
        dest.unlink(missing_ok=True)
        raise ArtifactMismatch(
            artifact=expected.artifact,
            key=expected.key,
            expected=expected.digest,
            actual=stored.digest,
            expected_size=expected.size_bytes,
            actual_size=stored.size_bytes,
        )
