"""The artifact store against moto's S3 server over HTTP."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest

from shared.artifacts import (
    STAGING_TTL_DAYS,
    ArtifactNotFound,
    ArtifactStore,
    ArtifactTooLarge,
    StorageUnavailable,
    blob_key,
)
from shared.digests import sha256_file
from shared.settings import Settings
from shared.stack.servers import free_port


def test_blobs_are_content_addressed_and_stream_in_parts(artifacts: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(40 * 1024 * 1024 + 123))  # several 16 MiB parts
    digest, size = sha256_file(src)
    stored, created = artifacts.put_blob(src, digest=digest)
    assert stored.key == blob_key(digest) and created
    assert artifacts.put_blob(src, digest=digest) == (stored, False), "identical bytes are stored once"
    back = artifacts.download(stored.key, tmp_path / "back.bin")
    assert (back.digest, back.size_bytes) == (digest, size)
    with pytest.raises(ArtifactTooLarge):
        artifacts.download(stored.key, tmp_path / "x", max_bytes=size - 1)
    artifacts.delete(stored.key)
    artifacts.delete(stored.key)  # deleting twice is fine
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


def test_unreachable_server_is_reported_as_unavailable(settings: Settings, tmp_path: Path) -> None:
    dead = ArtifactStore.from_settings(settings.model_copy(update={"s3_endpoint": f"127.0.0.1:{free_port()}"}))
    with pytest.raises(StorageUnavailable, match="unreachable"):
        dead.download("any", tmp_path / "x")
