"""Helpers shared by the integration, e2e and fault tests (not fixtures: plain functions)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy

from samples.tiny import write_sample
from shared import topology
from shared.messages.device import DesiredState, DeviceHello
from shared.messages.registry import ModelDetail
from shared.settings import Settings


def device_hello(device_id: str, device_class: str = "rpi5", *, active_digest: str | None = None) -> DeviceHello:
    """A plain aarch64 device's hello (4 GiB, 4 cores, onnxruntime 1.20.1 on the CPU)."""
    return DeviceHello(
        device_id=device_id,
        device_class=device_class,
        arch="aarch64",
        ram_mb=4096,
        cpu_count=4,
        onnxruntime_version="1.20.1",
        execution_providers=["CPUExecutionProvider"],
        agent_version="1",
        active_digest=active_digest,
    )


def unique(prefix: str = "m") -> str:
    """A model name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sample_files(directory: Path, *, seed: int = 0) -> tuple[Path, Path]:
    return write_sample(directory, seed=seed)


async def stream_messages(
    nc: Client, subject: str, *, timeout: float = 1.0
) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """Every message currently stored on `subject` (wildcards allowed), with headers, in order."""
    js = nc.jetstream()
    sub = await js.subscribe(subject, ordered_consumer=True, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
    out: list[tuple[dict[str, Any], dict[str, str]]] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=timeout)
            except (TimeoutError, Exception) as exc:
                if "timeout" in type(exc).__name__.lower():
                    break
                raise
            try:
                body = json.loads(msg.data)
            except ValueError:
                body = {"_raw": msg.data.decode(errors="replace")}
            out.append((body, dict(msg.headers or {})))
    finally:
        await sub.unsubscribe()
    return out


async def dlq_entries(nc: Client, *, containing: str) -> list[dict[str, str]]:
    """Headers of DLQ entries whose original body contains `containing`."""
    js = nc.jetstream()
    sub = await js.subscribe(
        "slmops.dlq.>", ordered_consumer=True, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    )
    found = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except Exception as exc:
                if "timeout" in type(exc).__name__.lower():
                    break
                raise
            if containing.encode() in msg.data:
                found.append(dict(msg.headers or {}) | {"_body": msg.data.decode(errors="replace")})
    finally:
        await sub.unsubscribe()
    return found


class TcpProxy:
    """A loopback TCP proxy that can be cut (connections refused, open ones dropped) and restored,
    to give a service a real outage of a dependency without stopping the dependency."""

    def __init__(self, upstream_port: int) -> None:
        import socket
        import threading

        self._socket_mod = socket
        self._threading = threading
        self.upstream_port = upstream_port
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.up()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def up(self) -> None:
        sock = self._socket_mod.socket()
        sock.setsockopt(self._socket_mod.SOL_SOCKET, self._socket_mod.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def down(self) -> None:
        if self._listener is not None:
            # shutdown first: closing a listening socket does not wake a thread blocked in accept()
            # on Linux, which would go on accepting connections through the "cut" proxy.
            try:
                self._listener.shutdown(self._socket_mod.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(self._socket_mod.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()

    def _accept(self, listener: Any) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = self._socket_mod.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                self._threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


def enroll(settings: Settings, device_id: str, *, device_class: str = "rpi5") -> Path:
    """Enrol a device as `slmops device enroll` does; returns its identity directory."""
    from services.edge_agent import identity
    from shared.auth.authority import Authority

    directory = settings.home / "devices" / device_id
    identity.enroll(
        Authority(settings.auth_dir),
        directory,
        device_id=device_id,
        device_class=device_class,
        registry_key_pem=settings.signing_key_file.with_suffix(".pub").read_text(),
    )
    return directory


def device_settings(settings: Settings, directory: Path) -> Settings:
    """`settings` connecting as the device enrolled in `directory`."""
    from services.edge_agent import identity

    return settings.model_copy(update={"nats_creds": directory / identity.CREDENTIALS_FILE})


def as_simulator(settings: Settings) -> Settings:
    """`settings` connecting as the fleet simulator (its own credentials)."""
    return settings.model_copy(update={"nats_creds": settings.auth_dir / "creds" / "simulator-fleet.creds"})


async def assign(
    nc: Client, device_ids: list[str], detail: ModelDetail, *, rollout_id: str | None = None, shadow: bool = False
) -> dict[str, int]:
    """Desired state for each device, as the rollout service writes it for wave 0 (`rollout_id`) or
    as `slmops device assign` does (none); the KV revision per device."""
    kv = await nc.jetstream().key_value(topology.KV_DESIRED)
    art = detail.version.artifact
    revisions = {}
    for device_id in device_ids:
        state = DesiredState(
            device_id=device_id,
            model=detail.version.name,
            version=detail.version.version,
            digest=art.digest,
            size_bytes=art.size_bytes,
            signature=art.signature,
            shadow=shadow,
            rollout_id=rollout_id,
            wave=0 if rollout_id else None,
            issued_at=datetime.now(UTC),
        )
        revisions[device_id] = await kv.put(device_id, state.model_dump_json().encode())
    return revisions
