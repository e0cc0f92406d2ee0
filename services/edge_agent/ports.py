"""The agent's collaborators, as Protocols: what the agent needs from the bus, not how it gets it.

`link.DeviceLink` is the NATS implementation; `adapters.memory.MemoryLink` stands in for it in
tests, so the real agent runs with no server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from services.edge_agent.desired import Desired
from shared.messages.device import DeviceHello, DeviceStatus, TelemetryWindow
from shared.messages.registry import DownloadUrl


class Link(Protocol):
    """Every publish and request a device makes, and the desired state it follows."""

    device_id: str

    async def hello(self, hello: DeviceHello) -> None:
        """Publish a hello (also the heartbeat).

        Raises:
            BusError: it did not reach the platform.
        """
        ...

    async def status(self, status: DeviceStatus) -> None:
        """Publish an install status.

        Raises:
            BusError: it did not reach the platform.
        """
        ...

    async def telemetry(self, window: TelemetryWindow) -> None:
        """Publish a telemetry window.

        Raises:
            BusError: it did not reach the platform.
        """
        ...

    async def download_url(self, digest: str) -> DownloadUrl:
        """A presigned URL for an artifact or evaluation set.

        Raises:
            BusError: the registry did not answer.
            CallerError: the registry refused (`NotFound` for an unknown digest).
        """
        ...

    def watch_desired(self) -> AsyncIterator[Desired | None]:
        """The current desired state, then every change (None: the key was deleted)."""
        ...
