"""The bus plumbing against real servers: authentication, topology idempotency, DLQ headers."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import bus, dlq, topology
from shared.kit.broker import make_broker
from shared.settings import Settings
from shared.stack.servers import free_port, start_nats


async def test_services_and_clients_authenticate_with_settings(tmp_path: Path) -> None:
    server = start_nats(
        port=free_port(), store_dir=tmp_path / "nats", log_dir=tmp_path, user="slmops-service", password="s3cret-pw"
    )
    try:
        good = Settings(home=tmp_path, nats_url=server.url, nats_user="slmops-service", nats_password="s3cret-pw")
        nc = await bus.connect(good)
        await topology.ensure_topology(nc.jetstream())
        await nc.close()
        broker = make_broker(good, service="test")
        await broker.connect()
        await broker.stop()
        with pytest.raises(bus.BusError, match="cannot reach NATS"):
            await bus.connect(good.model_copy(update={"nats_password": "wrong"}), timeout=2)
    finally:
        server.stop()


async def test_topology_is_idempotent_and_converges(settings: Settings) -> None:
    nc = await bus.connect(settings)
    try:
        js = nc.jetstream()
        await topology.ensure_topology(js)
        await topology.ensure_topology(js)
        for cfg in topology.STREAMS:
            info = await js.stream_info(cfg.name or "")
            assert info.config.subjects == cfg.subjects and info.config.retention == cfg.retention
        for kv in topology.KV_BUCKETS:
            assert (await (await js.key_value(kv.bucket)).status()).bucket == kv.bucket
    finally:
        await nc.close()


def test_dlq_headers_are_single_line_bounded_and_deduplicating() -> None:
    h = dlq.dead_letter_headers(
        service="registry", reason="line one\nline two " + "x" * 5000, original_subject="s", original_id="7"
    )
    assert "\n" not in h[dlq.REASON] and len(h[dlq.REASON]) == dlq.MAX_REASON
    assert (
        h["Nats-Msg-Id"]
        == dlq.dead_letter_headers(service="registry", reason="other", original_subject="s", original_id="7")[
            "Nats-Msg-Id"
        ]
    )
