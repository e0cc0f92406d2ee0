"""The agent's link in memory, so the real `Agent` runs in a test with no NATS and no registry.

`MemoryLink` stands in for `link.DeviceLink` and for the registry behind it: it records every
hello, status and telemetry window the device sends; serves presigned-URL answers for the files it
was given (as `file://` URLs, which the agent's real HTTP transfer reads like any other) with the
signature a registry would give, and the public key to check them; and feeds desired states, each
under the next KV revision, to the agent's watcher. Tests can make the next URL requests fail
(`fail_next_urls`) or hold one digest's URL until they say so (`hold`), to exercise retries and a
newer revision cancelling an install.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.edge_agent.desired import Desired
from shared import signing
from shared.digests import sha256_file
from shared.errors import NotFound, SlmopsError
from shared.messages.device import DesiredState, DeviceHello, DeviceStatus, TelemetryWindow
from shared.messages.registry import DownloadUrl

__all__ = ["MemoryLink", "Offer"]

URL_TTL_SECONDS = 300


@dataclass(frozen=True, kw_only=True)
class Offer:
    """A file the link serves, as the registry would describe it."""

    digest: str
    size_bytes: int
    signature: str
    path: Path


class MemoryLink:
    """`ports.Link` in memory, with the registry's two answers a device needs.

    Args:
        device_id: the device this link belongs to.
        signing_key: the "registry's" key: offered files are signed with it; its public half
            (`public_key_pem`) is what a test pins in the agent's config, as enrolment does.
    """

    def __init__(self, device_id: str, *, signing_key: Ed25519PrivateKey | None = None) -> None:
        self.device_id = device_id
        self._key = signing_key or Ed25519PrivateKey.generate()
        self.public_key_pem = signing.public_key_pem(self._key)
        self.hellos: list[DeviceHello] = []
        self.statuses: list[DeviceStatus] = []
        self.windows: list[TelemetryWindow] = []
        self.url_requests: list[str] = []
        self._offers: dict[str, Offer] = {}
        self._url_errors: list[SlmopsError] = []
        self._holds: dict[str, asyncio.Event] = {}
        self._desired: asyncio.Queue[Desired | None] = asyncio.Queue()
        self._revision = 0
        self._changed = asyncio.Event()

    # --- what a test sets up ----------------------------------------------------------------------

    def offer(self, path: Path) -> Offer:
        """Serve the file at `path` under its sha256, signed like a registered artifact."""
        digest, size = sha256_file(path)
        offer = Offer(digest=digest, size_bytes=size, signature=signing.sign_digest(self._key, digest), path=path)
        self._offers[digest] = offer
        return offer

    def desire(self, state: DesiredState) -> int:
        """Write the device's desired state; returns the revision it gets (each write the next one)."""
        self._revision += 1
        self._desired.put_nowait(Desired(state=state, revision=self._revision))
        return self._revision

    def fail_next_urls(self, *errors: SlmopsError) -> None:
        """The next URL requests raise these, in order (e.g. `BusError`, `NotFound`)."""
        self._url_errors.extend(errors)

    def hold(self, digest: str) -> asyncio.Event:
        """URL requests for `digest` wait until the returned event is set."""
        return self._holds.setdefault(digest, asyncio.Event())

    async def wait_for(
        self, done: Callable[[list[DeviceStatus]], bool], *, timeout: float = 30.0
    ) -> list[DeviceStatus]:
        """The statuses so far, once `done(statuses)` holds (checked after each status and URL request).

        Raises:
            TimeoutError: it did not hold within `timeout` seconds.
        """
        async with asyncio.timeout(timeout):
            while not done(self.statuses):
                self._changed.clear()
                await self._changed.wait()
        return self.statuses

    # --- ports.Link -------------------------------------------------------------------------------

    async def hello(self, hello: DeviceHello) -> None:
        self.hellos.append(hello)

    async def status(self, status: DeviceStatus) -> None:
        self.statuses.append(status)
        self._changed.set()

    async def telemetry(self, window: TelemetryWindow) -> None:
        self.windows.append(window)

    async def download_url(self, digest: str) -> DownloadUrl:
        self.url_requests.append(digest)
        self._changed.set()
        if digest in self._holds:
            await self._holds[digest].wait()
        if self._url_errors:
            raise self._url_errors.pop(0)
        offer = self._offers.get(digest)
        if offer is None:
            raise NotFound(f"no registered artifact or evaluation set has digest {digest} (not_found)")
        return DownloadUrl(
            url=offer.path.as_uri(),
            digest=digest,
            size_bytes=offer.size_bytes,
            signature=offer.signature,
            expires_in_seconds=URL_TTL_SECONDS,
        )

    async def watch_desired(self) -> AsyncIterator[Desired | None]:
        while True:
            yield await self._desired.get()


if TYPE_CHECKING:  # mypy holds the memory link to the agent's port
    from services.edge_agent.ports import Link

    _link: Link = MemoryLink("memory")
