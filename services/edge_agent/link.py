"""The device's side of the bus: what it publishes and what it asks, as plain nats-py calls.

Everything a device sends goes to JetStream (hello and status to SLMOPS_DEVICE, telemetry to
SLMOPS_TELEMETRY) with a message id, so a retried publish after a reconnect is not counted twice.
Ids are derived from what the message says (device, revision, step, attempt), not random.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from services.edge_agent.desired import Desired
from shared import bus, subjects, topology
from shared.clients import RegistryClient
from shared.messages.device import DeviceHello, DeviceStatus, TelemetryWindow
from shared.messages.envelope import Message, deterministic_id, new_id, wrap
from shared.messages.registry import DownloadUrl, PublicKey

SOURCE_PREFIX = "device"
log = logging.getLogger("slmops.agent")


def status_message_id(status: DeviceStatus) -> str:
    """The `Nats-Msg-Id` of a status: device, revision, step, attempt and progress (a retry is one message)."""
    progress = f"{status.progress.done}" if status.progress else ""
    return deterministic_id(
        "device.status", status.device_id, str(status.desired_revision), status.step, str(status.attempt), progress
    )


def telemetry_message_id(window: TelemetryWindow) -> str:
    """The `Nats-Msg-Id` of a telemetry window: device, model and window start."""
    return deterministic_id("telemetry", window.device_id, window.model_digest, window.window_start.isoformat())


async def read_desired(kv: KeyValue, device_id: str) -> Desired | None:
    """The device's desired state as KV holds it now (None: no key, or deleted).

    Raises:
        pydantic.ValidationError: the value is not a valid desired state.
    """
    try:
        entry = await kv.get(device_id)
    except KeyNotFoundError:
        return None
    if not entry.value:
        return None
    return Desired.from_entry(entry.value, revision=entry.revision)


class DeviceLink:
    """The `ports.Link` of a real device: one NATS connection, its own subjects."""

    def __init__(self, nc: Client, *, device_id: str) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self.device_id = device_id
        self._source = f"{SOURCE_PREFIX}:{device_id}"
        self._registry = RegistryClient(nc, source=self._source)
        self._kv: KeyValue | None = None

    async def hello(self, hello: DeviceHello) -> None:
        await self._publish(hello, subjects.device_hello(self.device_id), new_id())

    async def status(self, status: DeviceStatus) -> None:
        await self._publish(status, subjects.device_status(self.device_id), status_message_id(status))

    async def telemetry(self, window: TelemetryWindow) -> None:
        await self._publish(window, subjects.telemetry(self.device_id), telemetry_message_id(window))

    async def download_url(self, digest: str) -> DownloadUrl:
        return await self._registry.download_url(digest)

    async def public_key(self) -> PublicKey:
        return await self._registry.public_key()

    async def watch_desired(self) -> AsyncIterator[Desired | None]:
        """The current desired state, then every change (None: the key was deleted)."""
        kv = await self._bucket()
        watcher = await kv.watch(self.device_id)
        try:
            async for entry in watcher:
                if entry is None:
                    continue  # end of initial values; keep watching
                if not entry.value:
                    yield None
                    continue
                try:
                    desired = Desired.from_entry(entry.value, revision=entry.revision)
                except ValidationError as exc:
                    # Not a valid instruction: keep serving what we have (the protocol's rule).
                    log.warning(
                        "ignoring an invalid desired state", extra={"revision": entry.revision, "error": str(exc)}
                    )
                    continue
                yield desired
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self._js.key_value(topology.KV_DESIRED)
        return self._kv

    async def _publish(self, payload: Message, subject: str, msg_id: str) -> None:
        await bus.publish(self._js, wrap(payload, source=self._source, id=msg_id), subject)
