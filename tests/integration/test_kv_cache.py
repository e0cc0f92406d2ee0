"""The watched copy of a KV bucket (shared/kv_cache.py) against a real nats-server of its own, which
the test kills and starts again: the cache keeps what it had, notices that its watcher was lost with
the server, watches again, and sees every write made after the restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType

from shared.kv_cache import KvCache
from shared.stack.servers import ServerProcess, free_port, respawn, server_ready, start_nats

BUCKET = "cachetest"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    nats_server = start_nats(port=free_port(), store_dir=tmp_path / "nats", log_dir=tmp_path / "logs")
    yield nats_server
    nats_server.stop()


@pytest.fixture
async def nc(server: ServerProcess) -> AsyncIterator[Client]:
    client = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    await client.jetstream().create_key_value(KeyValueConfig(bucket=BUCKET, storage=StorageType.FILE, history=1))
    yield client
    await client.close()


async def until(check: Callable[[], bool], *, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not in time"
        await asyncio.sleep(0.05)


async def test_the_cache_follows_writes_and_deletes_and_notes_its_own(nc: Client) -> None:
    kv = await nc.jetstream().key_value(BUCKET)
    first = await kv.put("a", b"1")
    await kv.put("b", b"2")
    seen: list[tuple[str, bytes | None, int]] = []
    cache = KvCache(nc.jetstream(), BUCKET, bytes.decode, on_update=lambda *u: seen.append(u), watchdog_seconds=0.2)
    try:
        await cache.ready()
        assert cache.get("a") == ("1", first) and sorted(cache.keys()) == ["a", "b"]
        later = await kv.update("a", b"10", last=first)
        await kv.delete("b")
        await until(lambda: cache.get("a") == ("10", later) and cache.get("b") is None)
        assert [(k, v) for k, v, _ in seen] == [("a", b"1"), ("b", b"2"), ("a", b"10"), ("b", None)]

        mine = await kv.put("c", b"3")
        cache.note("c", b"3", mine)  # the writer's own write, seen before the watcher delivers it
        assert cache.get("c") == ("3", mine)
        cache.note("c", b"stale", mine - 1)
        assert cache.get("c") == ("3", mine), "an older revision never replaces a newer one"

        await kv.put("a", b"11")  # behind the cache's back, as far as `refresh` is concerned
        await cache.refresh("a")
        assert cache.get("a") is not None and cache.get("a")[0] == "11"  # type: ignore[index]
    finally:
        await cache.stop()


async def test_the_cache_watches_again_after_the_server_restarts(server: ServerProcess, nc: Client) -> None:
    kv = await nc.jetstream().key_value(BUCKET)
    await kv.put("a", b"before")
    cache = KvCache(nc.jetstream(), BUCKET, bytes.decode, watchdog_seconds=0.2)
    try:
        await cache.ready()
        assert cache.get("a") is not None

        server.process.kill()  # kill -9: the watcher's ordered consumer is gone with it
        server.process = respawn(server).process
        await until(lambda: server_ready(server, timeout=0.5))
        await until(lambda: nc.is_connected)
        assert cache.get("a") is not None and cache.get("a")[0] == "before", "kept across the outage"  # type: ignore[index]

        kv = await nc.jetstream().key_value(BUCKET)
        revision = await kv.put("a", b"after")
        await kv.put("new", b"key")
        await until(lambda: cache.get("a") == ("after", revision) and cache.get("new") is not None)
        assert cache.restarts >= 1, "the lost watcher was replaced"
    finally:
        await cache.stop()


async def test_ready_means_every_key_has_been_read(nc: Client) -> None:
    """nats-py's own end-of-initial-values marker may come before the entries; `ready` waits for
    the bucket's last sequence instead, so a fresh copy never looks emptier than the bucket."""
    kv = await nc.jetstream().key_value(BUCKET)
    keys = [f"k{i}" for i in range(2000)]
    for i in range(0, len(keys), 500):
        await asyncio.gather(*(kv.put(k, b"v") for k in keys[i : i + 500]))
    for _ in range(3):
        cache = KvCache(nc.jetstream(), BUCKET, bytes.decode)
        try:
            await cache.ready()
            assert len(cache.keys()) == len(keys)
        finally:
            await cache.stop()
