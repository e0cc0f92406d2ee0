"""The batch puller's timing (shared/kit/batch.py), on a fake connection: a message that arrives
alone is handed over within the linger, not at the next second's poll."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from shared import topology
from shared.kit.batch import Puller


class FakeNats:
    """Takes the pull requests and remembers them; messages are injected by the test."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []

    async def publish(self, subject: str, body: bytes, reply: str = "") -> None:
        self.requests.append(body)


class Message:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.headers: dict[str, str] | None = None


async def test_a_lone_message_is_handed_over_within_the_linger() -> None:
    puller = Puller(nc=FakeNats(), consumer=topology.TELEMETRY_WINDOWS, inbox_prefix="_INBOX.t")  # type: ignore[arg-type]

    async def arrive_later() -> None:
        await asyncio.sleep(0.05)
        await puller._on_message(Message(b"x"))  # type: ignore[arg-type]

    started = time.monotonic()
    task = asyncio.create_task(arrive_later())
    batch = await puller.next_batch(linger=0.05)
    waited = time.monotonic() - started
    await task
    assert [m.data for m in batch] == [b"x"]  # type: ignore[attr-defined]
    assert waited < 0.5, f"{waited:.2f} s: the first message should wake the batch, not the 1 s poll"


async def test_a_full_batch_ends_the_linger_at_once() -> None:
    consumer = topology.TELEMETRY_WINDOWS
    puller = Puller(nc=FakeNats(), consumer=consumer, inbox_prefix="_INBOX.t")  # type: ignore[arg-type]
    for i in range(consumer.batch_size + 3):
        await puller._on_message(Message(str(i).encode()))  # type: ignore[arg-type]
    batch: list[Any] = await puller.next_batch(linger=10)
    assert len(batch) == consumer.batch_size
    rest: list[Any] = await puller.next_batch(linger=0.01)
    assert [m.data for m in rest] == [str(consumer.batch_size + i).encode() for i in range(3)]
