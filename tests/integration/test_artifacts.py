"""The artifact store against the embedded S3 server (SeaweedFS) over HTTP, and the in-memory store
held to the same contract.

The contract tests run once per store (`store` is parametrized): the in-memory store the unit tests
hand to the services must store, refuse and fail exactly where the real one does, or the unit tests
would prove behaviour S3 does not have. The tests after them are the real store's alone (multipart
transfers, the lifecycle rule, public endpoints).
"""

from __future__ import annotations

import os
import urllib.request
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from shared.artifacts import (
    STAGING_PREFIX,
    STAGING_TTL_DAYS,
    ArtifactNotFound,
    ArtifactStore,
    ArtifactTooLarge,
    StorageUnavailable,
    blob_key,
)
from shared.digests import sha256_file
from shared.memory_artifacts import OPERATIONS, MemoryArtifactStore
from shared.settings import Settings
from shared.stack.servers import free_port

Store = ArtifactStore | MemoryArtifactStore


@pytest.fixture(params=["memory", "s3"])
def store(request: pytest.FixtureRequest) -> Store:
    """Each store in turn; only the S3 one starts the servers."""
    if request.param == "memory":
        return MemoryArtifactStore(bucket="slmops-test")
    artifacts: ArtifactStore = request.getfixturevalue("artifacts")
    return artifacts


@pytest.fixture(params=["memory", "s3"])
def unreachable(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """Each store with S3 out of reach: a simulated outage, and a real store pointed at a dead port."""
    if request.param == "memory":
        memory = MemoryArtifactStore()
        memory.fail(*OPERATIONS)
        return memory
    settings: Settings = request.getfixturevalue("settings")
    return ArtifactStore.from_settings(settings.model_copy(update={"s3_endpoint": f"127.0.0.1:{free_port()}"}))


def random_file(path: Path, size: int = 4096) -> Path:
    """A file with bytes no other test stores, so a blob is always new to the shared bucket."""
    path.write_bytes(os.urandom(size))
    return path


# --- the contract: both stores ---------------------------------------------------------------


def test_a_blob_is_stored_once_at_its_content_address(store: Store, tmp_path: Path) -> None:
    src = random_file(tmp_path / "model.onnx")
    digest, size = sha256_file(src)
    stored, created = store.put_blob(src, digest=digest)
    assert (stored.key, stored.digest, stored.size_bytes, created) == (blob_key(digest), digest, size, True)
    assert store.put_blob(src, digest=digest) == (stored, False), "identical bytes are stored once"
    back = store.download(stored.key, tmp_path / "back.onnx")
    assert (back.key, back.digest, back.size_bytes) == (stored.key, digest, size)
    assert (tmp_path / "back.onnx").read_bytes() == src.read_bytes()


def test_a_download_over_the_limit_is_too_large(store: Store, tmp_path: Path) -> None:
    src = random_file(tmp_path / "model.onnx")
    digest, size = sha256_file(src)
    stored, _ = store.put_blob(src, digest=digest)
    with pytest.raises(ArtifactTooLarge) as raised:
        store.download(stored.key, tmp_path / "x", max_bytes=size - 1)
    assert (raised.value.key, raised.value.limit) == (stored.key, size - 1)
    assert store.download(stored.key, tmp_path / "y", max_bytes=size).size_bytes == size, "the limit is inclusive"


def test_missing_objects_and_buckets_are_not_found(store: Store, tmp_path: Path) -> None:
    key = f"{STAGING_PREFIX}never-uploaded/{os.urandom(8).hex()}.onnx"
    with pytest.raises(ArtifactNotFound) as raised:
        store.download(key, tmp_path / "x")
    assert (raised.value.bucket, raised.value.key) == (store.bucket, key)
    with pytest.raises(ArtifactNotFound):
        store.download(key, tmp_path / "x", max_bytes=100)
    with pytest.raises(ArtifactNotFound):
        store.download(key, tmp_path / "x", bucket="no-such-bucket-anywhere")
    with pytest.raises(ArtifactNotFound):
        store.read_bytes(key)
    assert not store.exists(key)
    store.delete(key)  # deleting what is not there is not an error


def test_staging_uploads_go_under_incoming_with_their_file_name(store: Store, tmp_path: Path) -> None:
    src = random_file(tmp_path / "tiny-embedder.onnx")
    first, second = store.upload_staging(src), store.upload_staging(src)
    assert first.key.startswith(STAGING_PREFIX) and first.key.endswith("/tiny-embedder.onnx")
    assert first.key != second.key, "each upload gets its own key"
    assert (first.digest, first.size_bytes) == sha256_file(src)
    assert store.exists(first.key)
    store.delete(first.key)
    store.delete(first.key)
    assert not store.exists(first.key) and store.exists(second.key)


def test_bytes_written_at_a_key_read_back(store: Store) -> None:
    key = f"teams/ml/{os.urandom(8).hex()}.bin"
    data = os.urandom(100)
    store.put_bytes(key, data)
    assert store.read_bytes(key) == data and store.exists(key)


def test_presigned_urls_are_path_style_with_their_lifetime(store: Store) -> None:
    key = blob_key("ab" * 32)
    url = urlsplit(store.presigned_get(key))
    query = parse_qs(url.query)
    assert url.scheme in ("http", "https") and url.netloc
    assert unquote(url.path) == f"/{store.bucket}/{key}"
    assert query["X-Amz-Expires"] == [str(int(store.presign_ttl.total_seconds()))]
    assert query["X-Amz-Signature"][0]
    short = parse_qs(urlsplit(store.presigned_get(key, ttl=timedelta(seconds=60))).query)
    assert short["X-Amz-Expires"] == ["60"]
    assert short["X-Amz-Signature"] != query["X-Amz-Signature"], "the signature covers the lifetime"


OUTAGE_CALLS = {
    "download": lambda store, src, tmp: store.download("any", tmp / "x"),
    "put_blob": lambda store, src, tmp: store.put_blob(src, digest=sha256_file(src)[0]),
    "upload_staging": lambda store, src, tmp: store.upload_staging(src),
    "exists": lambda store, src, tmp: store.exists("any"),
    "delete": lambda store, src, tmp: store.delete("any"),
}


@pytest.mark.parametrize("operation", sorted(OUTAGE_CALLS))
def test_an_unreachable_store_is_unavailable(unreachable: Store, tmp_path: Path, operation: str) -> None:
    src = random_file(tmp_path / "model.onnx")
    with pytest.raises(StorageUnavailable, match="unreachable"):
        OUTAGE_CALLS[operation](unreachable, src, tmp_path)


# --- the in-memory store's fault injection -----------------------------------------------------


def test_a_simulated_outage_hits_only_the_named_operation_and_key(tmp_path: Path) -> None:
    memory = MemoryArtifactStore()
    src = random_file(tmp_path / "model.onnx")
    digest = sha256_file(src)[0]
    memory.fail("put_blob", key=blob_key(digest))
    with pytest.raises(StorageUnavailable):
        memory.put_blob(src, digest=digest)
    other = random_file(tmp_path / "other.onnx")
    assert memory.put_blob(other, digest=sha256_file(other)[0])[1], "another key is unaffected"
    assert memory.upload_staging(src).key in memory.keys(), "another operation is unaffected"
    memory.recover()
    assert memory.put_blob(src, digest=digest)[1]


def test_a_simulated_failure_must_name_real_operations() -> None:
    with pytest.raises(ValueError, match="unknown: \\['put_blobs'\\]"):
        MemoryArtifactStore().fail("put_blobs")


# --- the real store only --------------------------------------------------------------------


def test_blobs_stream_in_parts(artifacts: ArtifactStore, tmp_path: Path) -> None:
    src = random_file(tmp_path / "big.bin", size=40 * 1024 * 1024 + 123)  # several 16 MiB parts
    digest, size = sha256_file(src)
    stored, created = artifacts.put_blob(src, digest=digest)
    assert created
    back = artifacts.download(stored.key, tmp_path / "back.bin")
    assert (back.digest, back.size_bytes) == (digest, size)
    artifacts.delete(stored.key)
    with pytest.raises(ArtifactNotFound):
        artifacts.download(stored.key, tmp_path / "gone")


def test_staging_uploads_expire_by_lifecycle_rule(artifacts: ArtifactStore) -> None:
    artifacts.ensure_bucket()
    assert artifacts.staging_expiry_days() == STAGING_TTL_DAYS


def test_presigned_urls_can_name_a_public_endpoint(settings: Settings, tmp_path: Path) -> None:
    port = settings.s3_endpoint.rsplit(":", 1)[1]
    public = ArtifactStore.from_settings(settings.model_copy(update={"s3_public_endpoint": f"localhost:{port}"}))
    src = tmp_path / "f.bin"
    src.write_bytes(b"hello edge")
    stored, _ = public.put_blob(src, digest=sha256_file(src)[0])
    url = public.presigned_get(stored.key)
    assert url.startswith(f"http://localhost:{port}/")
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == b"hello edge"
