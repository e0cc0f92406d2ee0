"""The artifact store: content-addressed blobs in S3 (MinIO, moto, AWS), through the `minio` SDK.

Blobs live at `blobs/sha256/<digest>` so identical bytes are stored once and a key can never
point at different content. Staging uploads (from the CLI) go under `incoming/` and are deleted
by whoever decides them. Transfers stream in fixed-size parts: memory use does not grow with the
model size. All calls are blocking (urllib3); async callers wrap them in `asyncio.to_thread`.

Errors (one tree, S3 and network errors mapped here and nowhere else):

    SlmopsError
    └── ArtifactError
        ├── ArtifactNotFound      NotFound: the bucket or object does not exist (the caller's problem)
        ├── ArtifactTooLarge      CallerError: over the limit the caller set
        └── StorageUnavailable    TransientError: the S3 server could not be reached or failed
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.error import MinioException, S3Error
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

from shared.digests import CHUNK, sha256_file
from shared.errors import CallerError, NotFound, SlmopsError, TransientError
from shared.settings import Settings

PART_SIZE = 16 * 1024 * 1024
BLOB_PREFIX = "blobs/sha256/"
STAGING_PREFIX = "incoming/"
STAGING_TTL_DAYS = 1
DEFAULT_PRESIGN_TTL = timedelta(minutes=5)
_MISSING = {"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"}


class ArtifactError(SlmopsError):
    """Base of the artifact store's errors."""


class ArtifactNotFound(ArtifactError, NotFound):
    def __init__(self, *, bucket: str, key: str) -> None:
        super().__init__(f"no object s3://{bucket}/{key}")
        self.bucket = bucket
        self.key = key


class ArtifactTooLarge(ArtifactError, CallerError):
    def __init__(self, *, key: str, limit: int) -> None:
        super().__init__(f"s3 object {key} is larger than the {limit} byte limit")
        self.key = key
        self.limit = limit


class StorageUnavailable(ArtifactError, TransientError):
    """S3 is down or failing; retry later."""


@dataclass(frozen=True, kw_only=True)
class StoredObject:
    key: str
    digest: str
    size_bytes: int


def blob_key(digest: str) -> str:
    """Where the blob with this sha256 lives."""
    return f"{BLOB_PREFIX}{digest}"


@contextmanager
def _mapped(bucket: str, key: str) -> Iterator[None]:
    """Translate minio/urllib3 errors into this module's tree: the one mapping boundary."""
    try:
        yield
    except S3Error as exc:
        if exc.code in _MISSING:
            raise ArtifactNotFound(bucket=bucket, key=key) from None
        raise StorageUnavailable(f"S3 error on s3://{bucket}/{key}: {exc.code}: {exc.message}") from None
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise StorageUnavailable(f"S3 unreachable for s3://{bucket}/{key}: {type(exc).__name__}: {exc}") from None


class ArtifactStore:
    """Blobs in one bucket (plus read access to objects other systems put in other buckets)."""

    def __init__(
        self,
        client: Minio,
        *,
        bucket: str,
        presign_ttl: timedelta = DEFAULT_PRESIGN_TTL,
        presigner: Minio | None = None,
    ) -> None:
        self._client = client
        self.bucket = bucket
        self._presign_ttl = presign_ttl
        # Presigning is local computation, but the signature covers the host devices will call.
        self._presigner = presigner or client

    @classmethod
    def from_settings(cls, settings: Settings, *, presign_ttl: timedelta = DEFAULT_PRESIGN_TTL) -> ArtifactStore:
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5.0, read=120.0),
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )

        def client(endpoint: str) -> Minio:
            return Minio(
                endpoint,
                access_key=settings.s3_access_key,
                secret_key=settings.s3_secret_key,
                secure=settings.s3_secure,
                region=settings.s3_region,
                http_client=http,
            )

        public = settings.s3_public_endpoint
        return cls(
            client(settings.s3_endpoint),
            bucket=settings.s3_bucket,
            presign_ttl=presign_ttl,
            presigner=client(public) if public else None,
        )

    def ensure_bucket(self) -> None:
        """Create the artifact bucket if needed and make S3 expire forgotten staging uploads.

        Staging uploads are deleted when their command is decided; the lifecycle rule is the
        backstop for the cases no process is left to do it (a CLI killed between upload and
        publish, a command given up while S3 was down).
        """
        with _mapped(self.bucket, ""):
            if not self._client.bucket_exists(self.bucket):
                try:
                    self._client.make_bucket(self.bucket)
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
            rule = Rule(
                ENABLED,
                rule_filter=Filter(prefix=STAGING_PREFIX),
                rule_id="expire-staging-uploads",
                expiration=Expiration(days=STAGING_TTL_DAYS),
            )
            self._client.set_bucket_lifecycle(self.bucket, LifecycleConfig([rule]))

    def staging_expiry_days(self) -> int | None:
        """Days after which S3 deletes staging uploads, as configured on the bucket (None: no rule)."""
        with _mapped(self.bucket, ""):
            config = self._client.get_bucket_lifecycle(self.bucket)
        for rule in config.rules if config else []:
            if rule.rule_filter and rule.rule_filter.prefix == STAGING_PREFIX and rule.expiration:
                return rule.expiration.days
        return None

    def ping(self) -> None:
        """Raise StorageUnavailable unless the server answers and the bucket exists."""
        with _mapped(self.bucket, ""):
            if not self._client.bucket_exists(self.bucket):
                raise ArtifactNotFound(bucket=self.bucket, key="")

    def upload_staging(self, path: Path) -> StoredObject:
        """Upload a local file under `incoming/` for a command to refer to; streamed in parts."""
        digest, size = sha256_file(path)
        key = f"{STAGING_PREFIX}{uuid.uuid4().hex}/{path.name}"
        self._put_file(path, key)
        return StoredObject(key=key, digest=digest, size_bytes=size)

    def put_blob(self, path: Path, *, digest: str) -> tuple[StoredObject, bool]:
        """Store a file's bytes at its content address; `digest` must be the file's sha256.

        Returns:
            The stored object and whether this call created it (False: it was already there),
            so a caller undoing a failed operation deletes only what it created.
        """
        key = blob_key(digest)
        size = path.stat().st_size
        if self.exists(key):
            return StoredObject(key=key, digest=digest, size_bytes=size), False
        self._put_file(path, key)
        return StoredObject(key=key, digest=digest, size_bytes=size), True

    def download(
        self, key: str, dest: Path, *, bucket: str | None = None, max_bytes: int | None = None
    ) -> StoredObject:
        """Stream an object to `dest`, hashing as it goes.

        Raises:
            ArtifactNotFound: no such object.
            ArtifactTooLarge: the object is over `max_bytes` (checked before and while reading).
        """
        bucket = bucket or self.bucket
        h = hashlib.sha256()
        size = 0
        with _mapped(bucket, key):
            if max_bytes is not None:
                stat = self._client.stat_object(bucket, key)
                if stat.size is not None and stat.size > max_bytes:
                    raise ArtifactTooLarge(key=key, limit=max_bytes)
            response = self._client.get_object(bucket, key)
            try:
                with dest.open("wb") as out:
                    for chunk in response.stream(CHUNK):
                        size += len(chunk)
                        if max_bytes is not None and size > max_bytes:
                            raise ArtifactTooLarge(key=key, limit=max_bytes)
                        h.update(chunk)
                        out.write(chunk)
            finally:
                response.close()
                response.release_conn()
        return StoredObject(key=key, digest=h.hexdigest(), size_bytes=size)

    def read_bytes(self, key: str, *, bucket: str | None = None) -> bytes:
        """A small object's bytes (keys, manifests); large ones go through `download`."""
        bucket = bucket or self.bucket
        with _mapped(bucket, key):
            response = self._client.get_object(bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def exists(self, key: str, *, bucket: str | None = None) -> bool:
        bucket = bucket or self.bucket
        try:
            with _mapped(bucket, key):
                self._client.stat_object(bucket, key)
        except ArtifactNotFound:
            return False
        return True

    def delete(self, key: str, *, bucket: str | None = None) -> None:
        """Delete an object; deleting a missing object is not an error."""
        bucket = bucket or self.bucket
        with _mapped(bucket, key):
            self._client.remove_object(bucket, key)

    def presigned_get(self, key: str, *, ttl: timedelta | None = None) -> str:
        """A short-lived GET URL, so devices download without holding S3 credentials."""
        with _mapped(self.bucket, key):
            return self._presigner.presigned_get_object(self.bucket, key, expires=ttl or self._presign_ttl)

    def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        with _mapped(self.bucket, key):
            self._client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)

    def _put_file(self, path: Path, key: str) -> None:
        with _mapped(self.bucket, key), path.open("rb") as f:
            self._client.put_object(self.bucket, key, f, path.stat().st_size, part_size=PART_SIZE)

    @property
    def presign_ttl(self) -> timedelta:
        return self._presign_ttl
