"""The device's side of the bus: what it publishes and what it asks, as plain nats-py calls.

Everything a device sends goes to JetStream (hello and status to SLMOPS_DEVICE, telemetry to
SLMOPS_TELEMETRY) with a message id, so a retried publish after a reconnect is not counted twice.
Ids are derived from what the message says (device, revision, step, attempt), not random.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import ValidationError

from services.edge_agent.desired import Desired
from shared import bus, subjects, topology
from shared.bus import BusError
from shared.clients import RegistryClient
from shared.messages.device import DeviceHello, DeviceStatus, TelemetryWindow
from shared.messages.envelope import Message, deterministic_id, new_id, wrap
from shared.messages.registry import DownloadUrl

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


class DeviceLink:
    """The `ports.Link` of a real device: one NATS connection, its own subjects.

    Its credentials allow exactly what this class does (`shared.auth.permissions.for_device`):
    publish its hello, status and telemetry; ask the registry for download URLs on its own
    subject; read its own `desired` key with a direct get; subscribe to that key's updates.

    Following the desired state is notify-then-fetch: every write to `$KV.desired.<id>` also
    reaches a plain subscription on that subject, which is only a hint (a write that lost its
    compare-and-set reaches it too); the value and its revision always come from a direct get of
    what the bucket stored. A fetch every `resync_seconds` covers hints lost while disconnected.
    """

    def __init__(self, nc: Client, *, device_id: str, resync_seconds: float = 30.0) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self.device_id = device_id
        self._source = f"{SOURCE_PREFIX}:{device_id}"
        self._registry = RegistryClient(nc, source=self._source, device_id=device_id)
        self._resync = resync_seconds

    async def hello(self, hello: DeviceHello) -> None:
        await self._publish(hello, subjects.device_hello(self.device_id), new_id())

    async def status(self, status: DeviceStatus) -> None:
        await self._publish(status, subjects.device_status(self.device_id), status_message_id(status))

    async def telemetry(self, window: TelemetryWindow) -> None:
        await self._publish(window, subjects.telemetry(self.device_id), telemetry_message_id(window))

    async def download_url(self, digest: str) -> DownloadUrl:
        return await self._registry.download_url(digest)

    async def watch_desired(self) -> AsyncIterator[Desired | None]:
        """The current desired state, then every change (None: no key, or it was deleted)."""
        hints = await self._nc.subscribe(desired_subject(self.device_id))
        first, last = True, None
        try:
            while True:
                try:
                    current = await get_desired(self._nc, self.device_id)
                except BusError:
                    pass  # unreachable now: keep what we have, try again after the wait
                except ValidationError as exc:
                    # Not a valid instruction: keep serving what we have (the protocol's rule).
                    log.warning("ignoring an invalid desired state", extra={"error": str(exc)})
                else:
                    if first or _revision(current) != _revision(last):
                        first, last = False, current
                        yield current
                with contextlib.suppress(NatsTimeout, TimeoutError):
                    await hints.next_msg(timeout=self._resync)
                while hints.pending_msgs:  # a burst of writes needs one fetch
                    await hints.next_msg(timeout=0.01)
        finally:
            with contextlib.suppress(Exception):
                await hints.unsubscribe()

    async def _publish(self, payload: Message, subject: str, msg_id: str) -> None:
        await bus.publish(self._js, wrap(payload, source=self._source, id=msg_id), subject)


def _revision(desired: Desired | None) -> int | None:
    return desired.revision if desired else None


def desired_subject(device_id: str) -> str:
    """Where every write to a device's desired key is published (`$KV.desired.<id>`)."""
    return f"$KV.{topology.KV_DESIRED}.{subjects.device_token(device_id)}"


async def get_desired(nc: Client, device_id: str, *, timeout: float = 5.0) -> Desired | None:
    """A device's desired state as the bucket holds it now, by direct get (None: no key, or deleted).

    Raises:
        BusError: the server did not answer.
        pydantic.ValidationError: the value is not a valid desired state.
    """
    subject = f"$JS.API.DIRECT.GET.KV_{topology.KV_DESIRED}.{desired_subject(device_id)}"
    try:
        msg = await nc.request(subject, b"", timeout=timeout)
    except (NatsTimeout, TimeoutError, NoRespondersError) as exc:
        raise BusError(f"could not read desired state of {device_id}: {type(exc).__name__}") from None
    headers = msg.headers or {}
    status = headers.get("Status")
    if status == "404":
        return None
    if status:
        raise BusError(f"could not read desired state of {device_id}: {status} {headers.get('Description', '')}")
    if headers.get("KV-Operation") in ("DEL", "PURGE") or not msg.data:
        return None
    return Desired.from_entry(msg.data, revision=int(headers["Nats-Sequence"]))
