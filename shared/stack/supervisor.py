"""`slmops up`: run the whole platform on one machine, each service as its own process.

Nothing is lost across `slmops down` / `slmops up`: JetStream's store (`<home>/nats`), the S3
server's objects (SeaweedFS, `<home>/s3`) and the signing key (`<home>/keys`) are kept, and every
start finds them (`slmops doctor` checks that records and blobs still agree).

Start order: nats-server → S3 server → streams, KV buckets, artifact bucket and signing key →
services → wait until every one answers its health ping. Then `supervise()` watches readiness,
not pids, and restarts any child that dies or stays unready, servers included (`watchdog`).
The running stack is described in `<home>/stack.json` (pids and addresses) so `slmops status`,
`slmops down` and every other CLI command find it; the file is removed on a clean stop.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from shared import bus, topology
from shared.artifacts import ArtifactStore
from shared.auth import bootstrap
from shared.clients import health
from shared.discovery import service_names
from shared.settings import STACK_FILE, Settings
from shared.signing import load_or_create_private_key, public_key_pem
from shared.stack.servers import (
    ServerError,
    ServerProcess,
    free_port,
    respawn,
    server_ready,
    start_nats,
    start_s3,
    stop_process,
)
from shared.stack.watchdog import ChildWatch

SERVER_GRACE = 15.0  # seconds a server may stay unready before it is restarted
SERVICE_GRACE = 30.0  # a service's start imports onnxruntime and friends: slower on a busy machine


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)


def port_of(url: str, default: int) -> int:
    parsed = urlparse(url if "://" in url else f"tcp://{url}")
    return parsed.port or default


async def init_platform(settings: Settings) -> None:
    """Create streams, KV buckets, the artifact bucket and the signing key; idempotent."""
    nc = await bus.connect(settings, name="slmops-init")
    try:
        await topology.ensure_topology(nc.jetstream())
    finally:
        await nc.close()
    await asyncio.to_thread(ArtifactStore.from_settings(settings).ensure_bucket)
    key = load_or_create_private_key(settings.signing_key_file)
    # Devices and operators get the public key by request (slmops.rpc.registry.public_key) or here.
    settings.signing_key_file.with_suffix(".pub").write_text(public_key_pem(key))


async def service_health(settings: Settings, names: list[str], *, timeout: float = 2.0) -> dict[str, bool]:
    """Ping each service's health subject; True if it answered ready."""
    try:
        nc = await bus.connect(settings, name="slmops-health", timeout=timeout)
    except bus.BusError:
        return {name: False for name in names}
    try:
        return {name: await health(nc, name, timeout=timeout) for name in names}
    finally:
        await nc.close()


class Stack:
    """The embedded stack's processes; `start()` then `supervise()` until `stop()`."""

    def __init__(self, settings: Settings, *, nats_port: int, s3_port: int, services: list[str] | None = None) -> None:
        self.home = settings.home.resolve()
        self._nats_port = nats_port or free_port()
        self._s3_port = s3_port or free_port()
        self.settings = settings.model_copy(
            update={
                "home": self.home,
                "nats_url": f"nats://127.0.0.1:{self._nats_port}",
                "s3_endpoint": f"127.0.0.1:{self._s3_port}",
            }
        )
        self.service_names = services if services is not None else service_names()
        if not self.service_names:
            raise ServerError(
                "no services are installed: this environment lacks the package's entry points "
                "(reinstall it: pip install -e '.[all]', or make venv)"
            )
        self.nats: ServerProcess | None = None
        self.s3: ServerProcess | None = None
        self.services: dict[str, ServiceProcess] = {}
        self._stopping = threading.Event()

    @property
    def admin_settings(self) -> Settings:
        """Settings with the admin's credentials: creating the topology is the admin's alone."""
        return self.settings.model_copy(
            update={"nats_creds": self.settings.auth_dir / "creds" / f"admin-{bootstrap.ADMIN}.creds"}
        )

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    def start(self, *, ready_timeout: float = 60.0) -> None:
        """Start everything and wait until healthy; on failure, stop what was started."""
        self.home.mkdir(parents=True, exist_ok=True)
        self._watches: dict[str, ChildWatch] = {}
        self._started_at = datetime.now(UTC).isoformat()
        try:
            # Authentication is on: every process connects with its own credentials (shared.auth).
            self.authority = bootstrap.prepare(self.settings.auth_dir, self.service_names)
            self.nats = start_nats(
                port=self._nats_port,
                store_dir=self.home / "nats",
                log_dir=self.log_dir,
                config=self.authority.directory / "nats-auth.conf",
            )
            self.s3 = start_s3(
                port=self._s3_port,
                log_dir=self.log_dir,
                data_dir=self.home / "s3",
                access_key=self.settings.s3_access_key,
                secret_key=self.settings.s3_secret_key,
            )
            asyncio.run(init_platform(self.admin_settings))
            for name in self.service_names:
                self.services[name] = self._spawn_service(name)
            self._write_stack_file()
            self._wait_healthy(ready_timeout)
        except BaseException:
            self.stop()
            raise

    def request_stop(self) -> None:
        """Ask `supervise()` to return (safe from a signal handler); the caller then calls `stop()`."""
        self._stopping.set()

    def supervise(self, *, poll: float = 0.5, probe_every: float = 2.0) -> None:
        """Until `request_stop()`: look at every child each `poll` seconds, probe readiness every
        `probe_every` seconds, and restart what is dead or unready (`check`)."""
        next_probe = 0.0
        while not self._stopping.wait(poll):
            now = time.monotonic()
            probe = now >= next_probe
            if probe:
                next_probe = now + probe_every
            self.check(probe=probe)

    def check(self, *, probe: bool = True) -> None:
        """One round, in dependency order: nats-server, then S3, then the services.

        Readiness is what each answers: NATS its /healthz?js-enabled-only=true, S3 an HTTP request,
        a service its health RPC. Services are neither judged nor restarted while NATS or S3 is
        not ready: their health goes through NATS, and a service started without them fails.
        """
        changed = False
        servers_ready = True
        for name in ("nats", "s3"):
            server = getattr(self, name)
            if server is None or self._stopping.is_set():
                return
            watch = self._watch(name, SERVER_GRACE, started_at=time.monotonic())
            exit_code = server.process.poll()
            ready = server_ready(server) if probe and exit_code is None else None
            reason = watch.observe(exit_code=exit_code, ready=ready, now=time.monotonic())
            if reason is not None:
                setattr(self, name, respawn(server))
                watch.restarted(now=time.monotonic(), reason=reason)
                changed = True
            servers_ready = servers_ready and reason is None and exit_code is None and ready is not False
        health = self._service_health() if probe and servers_ready and not self._stopping.is_set() else {}
        for name, svc in list(self.services.items()):
            if not servers_ready or self._stopping.is_set():
                break
            watch = self._watch(name, SERVICE_GRACE, started_at=svc.started_at)
            reason = watch.observe(exit_code=svc.process.poll(), ready=health.get(name), now=time.monotonic())
            if reason is None:
                continue
            stop_process(svc.process, timeout=5.0)  # a hung service: SIGTERM, then SIGKILL
            restarted = self._spawn_service(name)
            watch.restarted(now=restarted.started_at, reason=reason)
            restarted.restarts = watch.restarts
            self.services[name] = restarted
            changed = True
        if changed:
            self._write_stack_file()

    def _watch(self, name: str, grace: float, *, started_at: float) -> ChildWatch:
        if name not in self._watches:
            self._watches[name] = ChildWatch(name=name, grace=grace, started_at=started_at)
        return self._watches[name]

    def _service_health(self) -> dict[str, bool]:
        return asyncio.run(service_health(self.settings, self.service_names))

    def stop(self) -> None:
        """Stop services first (they drain in-flight work), then S3, then NATS."""
        self._stopping.set()
        for svc in self.services.values():
            if svc.process.poll() is None:
                svc.process.send_signal(signal.SIGTERM)
        for svc in self.services.values():
            stop_process(svc.process, timeout=20.0)
        for server in (self.s3, self.nats):
            if server is not None:
                server.stop()
        (self.home / STACK_FILE).unlink(missing_ok=True)

    def describe(self) -> dict[str, Any]:
        return {
            "supervisor_pid": os.getpid(),
            "home": str(self.home),
            "nats_url": self.settings.nats_url,
            "s3_endpoint": self.settings.s3_endpoint,
            "s3_bucket": self.settings.s3_bucket,
            "started_at": self._started_at,
            "servers": {
                s.name: {"pid": s.pid, "url": s.url, "ready_url": s.ready_url} | self._restarts_of(s.name)
                for s in (self.nats, self.s3)
                if s is not None
            },
            "services": {n: {"pid": s.process.pid} | self._restarts_of(n) for n, s in self.services.items()},
        }

    def _restarts_of(self, name: str) -> dict[str, object]:
        watch = self._watches.get(name)
        return watch.describe() if watch else {"restarts": 0, "last_restart": None}

    def _spawn_service(self, name: str) -> ServiceProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        env = os.environ | {
            "SLMOPS_HOME": str(self.home),
            "SLMOPS_NATS_URL": self.settings.nats_url,
            "SLMOPS_NATS_CREDS": str(self.settings.auth_dir / "creds" / f"service-{name}.creds"),
            "SLMOPS_S3_ENDPOINT": self.settings.s3_endpoint,
        }
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "shared.cli.main", "service", "run", name],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        return ServiceProcess(name=name, process=proc, log_path=log_path)

    def _write_stack_file(self) -> None:
        path = self.home / STACK_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.describe(), indent=2))
        tmp.replace(path)

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        health: dict[str, bool] = {}
        while time.monotonic() < deadline:
            for name, svc in self.services.items():
                if svc.process.poll() is not None:
                    tail = svc.log_path.read_text(errors="replace")[-3000:]
                    raise ServerError(f"service {name} exited with {svc.process.returncode}:\n{tail}")
            health = self._service_health()
            if all(health.values()):
                return
            time.sleep(0.2)
        sick = [n for n, ok in health.items() if not ok]
        raise ServerError(f"services not healthy after {timeout:.0f}s: {', '.join(sick)}; logs in {self.log_dir}")
