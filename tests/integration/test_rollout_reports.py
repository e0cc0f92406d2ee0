"""Device reports against the real nats-server, with the rollout service running (their only reader):
an invalid hello or status ends in the DLQ with its reason, from the rollout service, and is acked;
a valid hello joins the inventory and leaves nothing in the DLQ."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from nats.aio.client import Client

from shared import subjects, topology
from shared.messages.device import DeviceStatus
from shared.messages.envelope import Message, wrap
from tests.support import device_hello as hello
from tests.support import dlq_entries

pytestmark = pytest.mark.usefixtures("running_rollout")

DIGEST = "ab" * 32


def envelope_bytes(payload: Message, *, data: dict[str, Any] | None = None) -> bytes:
    """The wire bytes of `payload`'s envelope, with `data` replaced (to send what no model would build)."""
    doc = json.loads(wrap(payload, source=f"device:{getattr(payload, 'device_id', 'x')}").model_dump_json())
    if data is not None:
        doc["data"] = data
    return json.dumps(doc).encode()


async def reason_for(nc: Client, marker: str) -> str:
    """The DLQ reason of the one entry whose body contains `marker`, once the rollout service wrote it."""
    for _ in range(100):
        entries = await dlq_entries(nc, containing=marker)
        if entries:
            (entry,) = entries
            assert entry["Slmops-Dlq-Service"] == "rollout"
            return entry["Slmops-Dlq-Reason"]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no DLQ entry for {marker}")


async def in_inventory(nc: Client, device_id: str) -> bool:
    kv = await nc.jetstream().key_value(topology.KV_DEVICES)
    for _ in range(100):
        try:
            await kv.get(device_id)
            return True
        except Exception:  # noqa: BLE001 - not folded yet
            await asyncio.sleep(0.1)
    return False


def device() -> str:
    return f"dev-{uuid.uuid4().hex[:10]}"


async def test_an_invalid_hello_is_dead_lettered_with_its_reason_and_a_valid_one_joins_the_inventory(
    nc: Client,
) -> None:
    js = nc.jetstream()
    good, bad = device(), device()
    await js.publish(subjects.device_hello(good), envelope_bytes(hello(good)))
    data = hello(bad).model_dump(mode="json") | {"gpu": "yes"}
    await js.publish(subjects.device_hello(bad), envelope_bytes(hello(bad), data=data))

    reason = await reason_for(nc, bad)
    assert "gpu" in reason and "invalid 'device.hello' data" in reason
    assert await in_inventory(nc, good)
    assert await dlq_entries(nc, containing=good) == []


async def test_an_invalid_status_is_dead_lettered_with_its_reason(nc: Client) -> None:
    js = nc.jetstream()
    bad = device()
    status = DeviceStatus(device_id=bad, desired_revision=3, digest=DIGEST, step="failed", reason="x")
    data = status.model_dump(mode="json") | {"reason": None}
    await js.publish(subjects.device_status(bad), envelope_bytes(status, data=data))

    assert "step 'failed' needs a reason" in await reason_for(nc, bad)
