"""The artifact store in memory: `shared.artifacts.ArtifactStore`'s public methods over a dict.

Use cases take the store through a port (`Blobs` in each service), so a test can hand them this one
and run in milliseconds with no S3 server. It raises the real store's error classes in the same
cases (`ArtifactNotFound`, `ArtifactTooLarge`, `StorageUnavailable`), so the services' error
mapping is exercised too; `tests/integration/test_artifacts.py` runs one contract suite against
both stores to keep them alike.

An outage is one call away: `fail("put_blob")` makes that operation raise `StorageUnavailable`
(optionally on one key only) until `recover()`, which is how a test checks what a service keeps
and undoes when S3 goes away in the middle of a command.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, urlencode

from shared.artifacts import (
    DEFAULT_PRESIGN_TTL,
    STAGING_PREFIX,
    ArtifactError,
    ArtifactNotFound,
    ArtifactTooLarge,
    StorageUnavailable,
    StoredObject,
    blob_key,
)
from shared.digests import sha256_file
from shared.settings import Settings

DEFAULT_BUCKET = Settings.model_fields["s3_bucket"].default
PRESIGN_HOST = "http://s3.memory.invalid"  # `.invalid` never resolves: a URL no test can fetch by mistake
# What an outage can break; not `presigned_get`, which the real store computes locally, S3 up or down.
OPERATIONS = frozenset({"upload_staging", "put_blob", "download", "read_bytes", "exists", "delete", "put_bytes"})


@dataclass(frozen=True, kw_only=True)
class _Fault:
    error: ArtifactError | None  # None: an outage, a fresh `StorageUnavailable` each time
    key: str | None


class MemoryArtifactStore:
    """Objects in memory, keyed by (bucket, key); safe to call from worker threads like the real one.

    Args:
        bucket: the artifact bucket (other buckets may be read and written by passing `bucket=`).
        presign_ttl: the default lifetime of `presigned_get` URLs.
    """

    def __init__(self, *, bucket: str = DEFAULT_BUCKET, presign_ttl: timedelta = DEFAULT_PRESIGN_TTL) -> None:
        self.bucket = bucket
        self._presign_ttl = presign_ttl
        self._objects: dict[tuple[str, str], bytes] = {}
        self._faults: dict[str, _Fault] = {}
        self._lock = threading.Lock()

    @property
    def presign_ttl(self) -> timedelta:
        return self._presign_ttl

    # --- the artifact store's methods ---------------------------------------------------------

    def upload_staging(self, path: Path) -> StoredObject:
        """Keep a local file under `incoming/<uuid>/<file name>`, as the CLI's staging upload does."""
        key = f"{STAGING_PREFIX}{uuid.uuid4().hex}/{path.name}"
        self._check("upload_staging", key)
        digest, size = sha256_file(path)
        self._put(self.bucket, key, path.read_bytes())
        return StoredObject(key=key, digest=digest, size_bytes=size)

    def put_blob(self, path: Path, *, digest: str) -> tuple[StoredObject, bool]:
        """Store a file at its content address; False if it was there already (nothing is overwritten).

        Like the real store, it trusts `digest` to be the file's sha256: the caller has just hashed it.
        """
        key = blob_key(digest)
        self._check("put_blob", key)
        size = path.stat().st_size
        stored = StoredObject(key=key, digest=digest, size_bytes=size)
        with self._lock:
            if (self.bucket, key) in self._objects:
                return stored, False
            self._objects[(self.bucket, key)] = path.read_bytes()
        return stored, True

    def download(
        self, key: str, dest: Path, *, bucket: str | None = None, max_bytes: int | None = None
    ) -> StoredObject:
        """Write an object to `dest` and hash it.

        Raises:
            ArtifactNotFound: no such object (or bucket).
            ArtifactTooLarge: the object is over `max_bytes`; `dest` is not written.
        """
        self._check("download", key)
        data = self._get(bucket or self.bucket, key)
        if max_bytes is not None and len(data) > max_bytes:
            raise ArtifactTooLarge(key=key, limit=max_bytes)
        dest.write_bytes(data)
        return StoredObject(key=key, digest=hashlib.sha256(data).hexdigest(), size_bytes=len(data))

    def read_bytes(self, key: str, *, bucket: str | None = None) -> bytes:
        self._check("read_bytes", key)
        return self._get(bucket or self.bucket, key)

    def exists(self, key: str, *, bucket: str | None = None) -> bool:
        self._check("exists", key)
        with self._lock:
            return (bucket or self.bucket, key) in self._objects

    def delete(self, key: str, *, bucket: str | None = None) -> None:
        """Delete an object; deleting a missing object is not an error (as in S3)."""
        self._check("delete", key)
        with self._lock:
            self._objects.pop((bucket or self.bucket, key), None)

    def presigned_get(self, key: str, *, ttl: timedelta | None = None) -> str:
        """A URL shaped like a presigned S3 GET (path-style, `X-Amz-Expires` in seconds, a signature).

        The signature is a digest of what it covers, so two keys or two lifetimes never share a URL;
        like the real store's, presigning does not check that the object exists.
        """
        seconds = int((ttl or self._presign_ttl).total_seconds())
        signature = hashlib.sha256(f"{self.bucket}/{key}?{seconds}".encode()).hexdigest()
        query = urlencode(
            {"X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Expires": seconds, "X-Amz-Signature": signature}
        )
        return f"{PRESIGN_HOST}/{quote(self.bucket)}/{quote(key)}?{query}"

    def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        """Write an object at `key` (an export another system left in the bucket, say)."""
        self._check("put_bytes", key)
        self._put(self.bucket, key, data)

    # --- for tests ----------------------------------------------------------------------------

    def keys(self, *, bucket: str | None = None) -> set[str]:
        """Every key in a bucket: what a test compares before and after a command."""
        wanted = bucket or self.bucket
        with self._lock:
            return {key for b, key in self._objects if b == wanted}

    def fail(self, *operations: str, key: str | None = None, error: ArtifactError | None = None) -> None:
        """Make `operations` raise `error` (an outage, by default), on `key` only if given, until `recover()`.

        Raises:
            ValueError: an operation this store does not have (a typo would otherwise test nothing).
        """
        unknown = sorted(set(operations) - OPERATIONS)
        if unknown or not operations:
            raise ValueError(f"name the operations to fail, among {sorted(OPERATIONS)}; unknown: {unknown}")
        fault = _Fault(error=error, key=key)
        with self._lock:
            self._faults.update(dict.fromkeys(operations, fault))

    def recover(self) -> None:
        """End every simulated failure."""
        with self._lock:
            self._faults.clear()

    # --- internals ----------------------------------------------------------------------------

    def _check(self, operation: str, key: str) -> None:
        with self._lock:
            fault = self._faults.get(operation)
        if fault is None or fault.key not in (None, key):
            return
        if fault.error is not None:
            raise fault.error
        raise StorageUnavailable(f"S3 unreachable for s3://{self.bucket}/{key}: simulated outage of {operation}")

    def _get(self, bucket: str, key: str) -> bytes:
        with self._lock:
            data = self._objects.get((bucket, key))
        if data is None:
            raise ArtifactNotFound(bucket=bucket, key=key)
        return data

    def _put(self, bucket: str, key: str, data: bytes) -> None:
        with self._lock:
            self._objects[(bucket, key)] = data
