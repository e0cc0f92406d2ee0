"""Starting the real servers on loopback: nats-server (JetStream) and an S3 server (SeaweedFS, `shared.stack.s3`).

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
    ready_url: str = ""  # what answers once the server is ready (set by the start function)
    stop_timeout: float = 10.0  # how long SIGTERM may take before SIGKILL

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds (default: `stop_timeout`)."""
        stop_process(self.process, timeout=self.stop_timeout if timeout is None else timeout)


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
    config: Path | None = None,
) -> ServerProcess:
    """A JetStream-enabled nats-server with file storage under `store_dir`; waits until healthy.

    `config` is a configuration file (the platform's operator trust, `shared.auth.authority`);
    `user`/`password` turn on single-user authentication instead, to test compose's config.
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
    if config is not None:
        cmd += ["--config", str(config)]
    if user:
        cmd += ["--user", user, "--pass", password or ""]
    proc = _spawn(cmd, log_path)
    server = ServerProcess("nats", f"nats://127.0.0.1:{port}", proc, log_path)
    _wait_http(server, f"http://127.0.0.1:{monitor_port}/healthz?js-enabled-only=true")
    return server


def start_s3(
    *,
    port: int,
    log_dir: Path,
    data_dir: Path | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    timeout: float = 60.0,
) -> ServerProcess:
    """SeaweedFS's S3 gateway on 127.0.0.1:`port`, objects on disk under `data_dir`; waits until it answers.

    `data_dir` defaults to `s3/` beside `log_dir`; what is there survives a stop, a kill -9 and a
    start. The gateway accepts only `access_key`/`secret_key` (default: the platform's settings),
    so signatures and presigned URLs' expiry are checked as a real S3 would.
    """
    from shared.settings import Settings
    from shared.stack.s3 import seaweedfs_command

    if access_key is None or secret_key is None:
        defaults = Settings()
        access_key, secret_key = defaults.s3_access_key, defaults.s3_secret_key
    log_dir.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir or log_dir.parent / "s3"
    log_path = log_dir / "s3-server.log"
    cmd = seaweedfs_command(port=port, data_dir=data_dir, access_key=access_key, secret_key=secret_key)
    proc = _spawn(cmd, log_path)
    # SeaweedFS's filer waits 15 s for its own streams on SIGTERM; what it has acknowledged is on
    # disk already (kill -9 loses nothing: bench/s3_persistence.py), so it gets 3 s.
    server = ServerProcess("s3", f"127.0.0.1:{port}", proc, log_path, stop_timeout=3.0)
    _wait_http(server, f"http://127.0.0.1:{port}/healthz", timeout=timeout)
    return server


def respawn(server: ServerProcess) -> ServerProcess:
    """Run a dead (or hung) server's command again: same ports, same store; does not wait.

    The supervisor's way back from a crash: it needs no knowledge of how the server was configured,
    and judges the new process by its readiness like any other (`server_ready`).
    """
    stop_process(server.process, timeout=5.0)
    proc = _spawn([str(a) for a in server.process.args], server.log_path)  # type: ignore[union-attr]
    return ServerProcess(
        server.name, server.url, proc, server.log_path, ready_url=server.ready_url, stop_timeout=server.stop_timeout
    )


def server_ready(server: ServerProcess, *, timeout: float = 2.0) -> bool:
    """Alive and answering its readiness URL (NATS: healthy with JetStream; S3: an HTTP answer)."""
    return server.alive() and http_ready(server.ready_url, timeout=timeout)


def http_ready(url: str, *, timeout: float = 2.0) -> bool:
    """True if `url` answers with a status below 500 (an error document from S3 is an answer)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(resp.status < 500)
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (urllib.error.URLError, OSError):
        return False


def _spawn(cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=os.environ.copy()
        )
    finally:
        log.close()


def _wait_http(server: ServerProcess, url: str, timeout: float = 30.0) -> None:
    server.ready_url = url
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
