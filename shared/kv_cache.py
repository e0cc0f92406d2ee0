"""A KV bucket's latest entries in memory, kept current by a watcher: a reconcile pass over 10,000
devices reads a dict instead of making 10,000 round trips (the rollout service), and one watcher
follows every simulated device's desired state (the fleet simulator).

The cache may lag the bucket by a few milliseconds, which is safe: every write the service makes
is compare-and-set on the revision it observed, so a stale read costs a `RevisionConflict` and a
fresh look, never a lost update. Two things keep the lag short. The service's own writes are
noted at once (`note`, with the revision the server gave them), so a replica never trips over its
own writes; and a key that conflicted is read again from the server (`refresh`).

nats-py's watcher is an ordered consumer that does not recreate itself when the server loses it
(a nats-server restart: nats-io/nats.py#510). A watchdog compares the bucket stream's last
sequence with the last one the cache applied; when the stream has moved and the cache has not,
twice in a row, it starts a new watcher, which delivers every key's latest entry again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

log = logging.getLogger("slmops.kv_cache")

T = TypeVar("T")
WATCHDOG_SECONDS = 2.0
READY_SECONDS = 30.0  # the first read of a bucket; beyond it the pass fails and the next one waits again


class KvCache(Generic[T]):
    """Latest value and revision of every key of `bucket`, parsed on first read (the whole bucket is
    watched, so the watchdog can compare with the stream's last sequence).

    Args:
        on_update: called with (key, raw value or None for a delete, revision) for every entry the
            watcher delivers that is newer than what the cache holds, including the first read of
            each key (not for `note`: the writer knows what it wrote).
        watchdog_seconds: how often the watcher is checked against the stream.
    """

    def __init__(
        self,
        js: JetStreamContext,
        bucket: str,
        parse: Callable[[bytes], T],
        *,
        on_update: Callable[[str, bytes | None, int], None] | None = None,
        watchdog_seconds: float = WATCHDOG_SECONDS,
    ) -> None:
        self._js = js
        self.bucket = bucket
        self._parse = parse
        self._on_update = on_update
        self._watchdog_seconds = watchdog_seconds
        self._raw: dict[str, tuple[bytes, int]] = {}
        self._parsed: dict[str, tuple[T, int]] = {}
        self._applied = 0  # the highest stream sequence (revision) applied
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.restarts = 0  # watchers started again after the server lost one

    async def ready(self) -> None:
        """Start watching on first use and wait until every existing key has been read once."""
        if self._ready.is_set():
            return
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"kv-cache-{self.bucket}")
        await asyncio.wait_for(self._ready.wait(), timeout=READY_SECONDS)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def get(self, key: str) -> tuple[T, int] | None:
        parsed = self._parsed.get(key)
        raw = self._raw.get(key)
        if raw is None:
            return None
        if parsed is None or parsed[1] != raw[1]:
            parsed = (self._parse(raw[0]), raw[1])
            self._parsed[key] = parsed
        return parsed

    def keys(self, prefix: str = "") -> list[str]:
        return [key for key in self._raw if key.startswith(prefix)]

    def note(self, key: str, value: bytes | None, revision: int) -> None:
        """A write the service made (None: a delete), at the revision the server gave it."""
        current = self._raw.get(key)
        if current is not None and current[1] >= revision:
            return  # the watcher delivered it, or something newer, first
        if value is None:
            self._raw.pop(key, None)
            self._parsed.pop(key, None)
        else:
            self._raw[key] = (value, revision)

    async def refresh(self, key: str) -> None:
        """Read `key` from the server (after a conflict: someone else wrote it)."""
        kv = await self._kv()
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:  # deleted or purged
            self._raw.pop(key, None)
            self._parsed.pop(key, None)
            return
        self.note(key, entry.value or None, int(entry.revision or 0))

    async def _kv(self) -> KeyValue:
        return await self._js.key_value(self.bucket)

    async def _run(self) -> None:
        while True:
            watcher = asyncio.create_task(self._watch(), name=f"kv-watch-{self.bucket}")
            try:
                await self._watchdog(watcher)
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher
            self.restarts += 1
            log.warning("KV watcher lost; watching again", extra={"bucket": self.bucket})
            await asyncio.sleep(self._watchdog_seconds / 4)  # the server may still be away

    async def _watch(self) -> None:
        kv = await self._kv()
        # The bucket's last sequence before watching: once the watcher has delivered it, every key
        # has been read once. (nats-py's own "end of initial values" marker can come before the
        # first entry when the watcher starts: nats-io/nats.py#842.)
        until = int((await self._js.stream_info(f"KV_{self.bucket}")).state.last_seq)
        if until <= self._applied:
            self._ready.set()
        watcher = await kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:  # nats-py's marker: not trusted (above)
                    continue
                revision = int(entry.revision or 0)
                self._applied = max(self._applied, revision)
                if self._applied >= until:
                    self._ready.set()
                current = self._raw.get(entry.key)
                if current is not None and current[1] >= revision:
                    continue
                if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                    if current is None:
                        continue  # a delete of a key the cache does not hold: nothing changed
                    del self._raw[entry.key]
                    self._parsed.pop(entry.key, None)
                    value = None
                else:
                    self._raw[entry.key] = (entry.value, revision)
                    value = entry.value
                if self._on_update is not None:
                    self._on_update(entry.key, value, revision)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def _watchdog(self, watcher: asyncio.Task[None]) -> None:
        """Return when the watcher ended or has stopped following the bucket."""
        stuck, seen = 0, self._applied
        while not watcher.done():
            await asyncio.sleep(self._watchdog_seconds)
            try:
                info = await self._js.stream_info(f"KV_{self.bucket}")
            except Exception:  # noqa: BLE001 - the server is away: nothing to compare yet
                continue
            moved = self._applied > seen
            seen = self._applied
            stuck = stuck + 1 if int(info.state.last_seq) > self._applied and not moved else 0
            if stuck >= 2:
                return
