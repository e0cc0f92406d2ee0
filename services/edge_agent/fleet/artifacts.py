"""The bytes: downloaded for real once per digest, then each device's copy derived from them.

Per distinct digest the simulator does what a device does, for real: asks the registry for a
presigned URL, streams the object over HTTP with a size limit, hashes it, and checks digest and
ed25519 signature with the agent's `verify_artifact`. Ten thousand devices then "download" from
this cache at their own link speed (`device.py` sleeps for size / link speed), because ten thousand
real copies of the same bytes through one loopback S3 server would measure moto, not the platform.

Each device's verification is still decided by real checks, not assumed:
* the digest: an unmodified copy is byte-for-byte the cached file, whose sha256 was computed;
  a `corrupt` device's copy really has a flipped byte, is written to disk and goes through
  `verify_artifact`, which rejects it;
* the signature: checked with `verify_artifact` for every distinct (digest, signature) a device's
  desired state names, so a desired state with a forged signature fails on every device given it.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from services.edge_agent.errors import DownloadFailed, VerificationFailed
from services.edge_agent.verify import verify_artifact
from shared.messages.registry import DownloadUrl

CHUNK = 256 * 1024
FETCH_ATTEMPTS = 3
FETCH_TIMEOUT = 30.0


@dataclass(frozen=True, kw_only=True)
class CachedArtifact:
    """A digest's bytes on local disk, fetched once (not yet verified: see `ArtifactCache.verify`)."""

    digest: str
    size_bytes: int
    path: Path


class ArtifactCache:
    """Single-flight, per-digest real downloads, and the per-device verification built on them."""

    def __init__(self, directory: Path, *, public_key_pem: str) -> None:
        self.directory = directory
        self.public_key_pem = public_key_pem
        self._fetches: dict[str, asyncio.Future[CachedArtifact]] = {}
        self._verdicts: dict[tuple[str, str], str | None] = {}
        self.real_downloads = 0
        self.real_bytes = 0
        self.corrupted_copies = 0

    async def fetch(self, url: DownloadUrl) -> CachedArtifact:
        """The artifact's bytes, downloaded for real by the first caller; later callers share them.

        Raises:
            DownloadFailed: the real download failed `FETCH_ATTEMPTS` times (not cached: the next
                caller tries again).
        """
        fut = self._fetches.get(url.digest)
        if fut is None:
            fut = self._fetches[url.digest] = asyncio.ensure_future(asyncio.to_thread(self._download, url))
        try:
            return await asyncio.shield(fut)
        except DownloadFailed:
            if self._fetches.get(url.digest) is fut:
                del self._fetches[url.digest]
            raise

    async def verify(self, artifact: CachedArtifact, *, signature: str, corrupt: bool, rng: random.Random) -> None:
        """Verify one device's copy of `artifact` against the signature its desired state names.

        Raises:
            VerificationFailed: the copy's sha256 or the signature does not check out.
        """
        if corrupt:
            position = rng.randrange(artifact.size_bytes)
            await asyncio.to_thread(self._verify_corrupted, artifact, signature, position)
            return
        key = (artifact.digest, signature)
        if key not in self._verdicts:
            self._verdicts[key] = await asyncio.to_thread(self._verdict, artifact, signature)
        reason = self._verdicts[key]
        if reason is not None:
            raise VerificationFailed(reason)

    def _verdict(self, artifact: CachedArtifact, signature: str) -> str | None:
        try:
            verify_artifact(
                artifact.path, digest=artifact.digest, signature=signature, public_key_pem=self.public_key_pem
            )
        except VerificationFailed as exc:
            return str(exc)
        return None

    def _verify_corrupted(self, artifact: CachedArtifact, signature: str, position: int) -> None:
        data = bytearray(artifact.path.read_bytes())
        data[position] ^= 0xFF
        with tempfile.NamedTemporaryFile(dir=self.directory, suffix=".corrupt", delete=False) as f:
            f.write(data)
            copy = Path(f.name)
        self.corrupted_copies += 1
        try:
            verify_artifact(copy, digest=artifact.digest, signature=signature, public_key_pem=self.public_key_pem)
        finally:
            copy.unlink(missing_ok=True)

    def _download(self, url: DownloadUrl) -> CachedArtifact:
        """Stream the presigned URL to `<digest>` with a size limit; bounded retries.

        Nothing is trusted here: the digest and signature are checked per device by `verify`.
        """
        target = self.directory / url.digest
        last = "no attempt made"
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            try:
                size = self._stream(url, target)
            except (OSError, urllib.error.URLError, DownloadFailed) as exc:
                last = f"{type(exc).__name__}: {exc}"
                target.unlink(missing_ok=True)
                if attempt < FETCH_ATTEMPTS:
                    time.sleep(0.2 * 2 ** (attempt - 1))
                continue
            self.real_downloads += 1
            self.real_bytes += size
            return CachedArtifact(digest=url.digest, size_bytes=size, path=target)
        raise DownloadFailed(f"the artifact could not be downloaded after {FETCH_ATTEMPTS} attempts: {last}")

    @staticmethod
    def _stream(url: DownloadUrl, target: Path) -> int:
        size = 0
        part = target.with_suffix(".part")
        with urllib.request.urlopen(url.url, timeout=FETCH_TIMEOUT) as resp, part.open("wb") as out:
            while chunk := resp.read(CHUNK):
                size += len(chunk)
                if size > url.size_bytes:
                    raise DownloadFailed(f"the server sent more than the {url.size_bytes} bytes the registry announced")
                out.write(chunk)
        if size != url.size_bytes:
            raise DownloadFailed(f"got {size} bytes, the registry announced {url.size_bytes}")
        part.replace(target)
        return size
