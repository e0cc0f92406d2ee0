"""Helpers shared by the integration, e2e and fault tests (not fixtures: plain functions)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy

from shared.sample_models import write_sample


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
