"""Starting the real servers on loopback: nats-server (JetStream) and moto's standalone S3 server.

Used by `slmops up` and by the test fixtures, so tests run against exactly what the demo runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from shared.errors import SlmopsError


class ServerError(SlmopsError):
    """A server binary is missing, or a server did not become ready."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def find_executable(name: str) -> str:
    """`name` from this interpreter's environment (where the wheels put it), else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise ServerError(f"{name} not found; install the project (pip install -e .) to get it")
    return found


@dataclass
class ServerProcess:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
        stop_process(self.process, timeout=timeout)


def stop_process(process: subprocess.Popen[bytes], *, timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def start_nats(
    *,
    port: int,
    store_dir: Path,
    log_dir: Path,
    monitor_port: int | None = None,
    user: str | None = None,
    password: str | None = None,
) -> ServerProcess:
    """A JetStream-enabled nats-server with file storage under `store_dir`; waits until healthy.

    `user`/`password` turn on authentication (one user), to test what compose's config requires.
    """
    store_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    monitor_port = monitor_port or free_port()
    log_path = log_dir / "nats-server.log"
    cmd = [
        find_executable("nats-server"),
        "--jetstream",
        "--store_dir",
        str(store_dir),
        "--addr",
        "127.0.0.1",
        "--port",
        str(port),
        "--http_port",
        str(monitor_port),
        "--server_name",
        f"slmops-{port}",
    ]
    if user:
        cmd += ["--user", user, "--pass", password or ""]
    proc = _spawn(cmd, log_path)
    server = ServerProcess("nats", f"nats://127.0.0.1:{port}", proc, log_path)
    _wait_http(server, f"http://127.0.0.1:{monitor_port}/healthz?js-enabled-only=true")
    return server


def start_s3(*, port: int, log_dir: Path) -> ServerProcess:
    """moto's standalone S3 server (in memory) on loopback; waits until it answers."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "s3-server.log"
    cmd = [find_executable("moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    proc = _spawn(cmd, log_path)
    server = ServerProcess("s3", f"127.0.0.1:{port}", proc, log_path)
    _wait_http(server, f"http://127.0.0.1:{port}/moto-api/")
    return server


def _spawn(cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=os.environ.copy()
        )
    finally:
        log.close()


def _wait_http(server: ServerProcess, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            tail = server.log_path.read_text(errors="replace")[-2000:]
            raise ServerError(f"{server.name} exited with {server.process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status < 500:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    server.stop()
    raise ServerError(f"{server.name} not ready after {timeout:.0f}s; see {server.log_path}")
