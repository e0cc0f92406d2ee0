"""NATS connections shared by many simulated devices.

A real device has its own connection; ten thousand in one process would be ten thousand sockets,
reader tasks and server-side clients. Devices are spread over a few connections instead (default
one per 500 devices, at most 32), and everything on the wire is per device as the protocol says:
each device publishes on its own subjects, with its own envelope source and message ids.

What is shared, and why:
* JetStream publish acknowledgements are collected asynchronously with a bounded number in flight
  per connection (`publish_async`), instead of one round trip at a time; a device still waits for
  the ack of each status before it reports the next step, so statuses stay ordered and durable.
* With `share_download_urls`, devices on one connection reuse the presigned URL of a digest for
  half its TTL, so the registry answers one request per connection and digest instead of one per
  device. Without it every device asks for its own URL, like the real agent.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client

from services.edge_agent.desired import Desired
from services.edge_agent.link import get_desired
from shared import bus
from shared.clients import RegistryClient
from shared.messages.envelope import Message, encode, wrap
from shared.messages.registry import DownloadUrl
from shared.settings import Settings

ACK_TIMEOUT = 10.0
PUBLISH_ATTEMPTS = 3
MAX_PENDING_ACKS = 2000
REGISTRY_TIMEOUT = 10.0


@dataclass
class _CachedUrl:
    url: DownloadUrl
    fresh_until: float


class FleetConnection:
    """One NATS connection and what its devices share: the ack pipeline and the URL cache."""

    def __init__(self, nc: Client, *, index: int, share_download_urls: bool) -> None:
        self.nc = nc
        self.index = index
        self.js = nc.jetstream(publish_async_max_pending=MAX_PENDING_ACKS)
        self.share_download_urls = share_download_urls
        self._urls: dict[str, _CachedUrl] = {}
        self._url_requests: dict[str, asyncio.Future[DownloadUrl]] = {}
        self.published = 0
        self.publish_retries = 0
        self.publish_lost = 0
        self.registry_requests = 0

    @classmethod
    async def open(cls, settings: Settings, *, index: int, share_download_urls: bool) -> FleetConnection:
        nc = await bus.connect(settings, name=f"slmops-fleet-{index}")
        return cls(nc, index=index, share_download_urls=share_download_urls)

    async def close(self) -> None:
        if not self.nc.is_closed:
            await self.nc.drain()

    async def publish(self, subject: str, payload: Message, *, msg_id: str, source: str) -> bool:
        """Publish to JetStream and wait for the ack; retried with the same id (so not duplicated).

        Returns:
            False if the message is lost after `PUBLISH_ATTEMPTS` (a device then carries on, as the
            agent does: its next status or hello repairs the picture).
        """
        envelope = wrap(payload, source=source, id=msg_id)
        data, headers = encode(envelope), bus.message_headers(envelope)
        for attempt in range(PUBLISH_ATTEMPTS):
            try:
                ack = await self.js.publish_async(subject, data, headers=headers)
                async with asyncio.timeout(ACK_TIMEOUT):  # cheaper than wait_for, at 10^5 acks it shows
                    await ack
            except (TimeoutError, nats.errors.Error):
                if attempt + 1 < PUBLISH_ATTEMPTS:
                    self.publish_retries += 1
                continue
            self.published += 1
            return True
        self.publish_lost += 1
        return False

    async def download_url(self, digest: str, *, device_id: str) -> DownloadUrl:
        """A presigned URL for `digest` from the registry (shared per connection if configured),
        asked as `device_id`, whose desired state must name it (the registry checks).

        Raises:
            BusError: the registry did not answer.
            NotFound: no registered artifact has that digest (any `CallerError`: the registry refused).
        """
        if not self.share_download_urls:
            return await self._ask_url(digest, device_id=device_id)
        cached = self._urls.get(digest)
        if cached is not None and time.monotonic() < cached.fresh_until:
            return cached.url
        pending = self._url_requests.get(digest)
        if pending is None:
            pending = self._url_requests[digest] = asyncio.ensure_future(self._ask_and_cache(digest, device_id))
            pending.add_done_callback(lambda _: self._url_requests.pop(digest, None))
        return await asyncio.shield(pending)

    async def desired(self, device_id: str) -> Desired | None:
        """The device's current desired state read from KV (what a device does when it comes back)."""
        return await get_desired(self.nc, device_id)

    async def _ask_and_cache(self, digest: str, device_id: str) -> DownloadUrl:
        url = await self._ask_url(digest, device_id=device_id)
        # Half the TTL: a device that starts a slow download late still gets a URL that works.
        self._urls[digest] = _CachedUrl(url=url, fresh_until=time.monotonic() + url.expires_in_seconds / 2)
        return url

    async def _ask_url(self, digest: str, *, device_id: str) -> DownloadUrl:
        self.registry_requests += 1
        client = RegistryClient(self.nc, source=f"device:{device_id}", timeout=REGISTRY_TIMEOUT, device_id=device_id)
        return await client.download_url(digest)
