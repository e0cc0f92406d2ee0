"""Builders for the blueprint tests: a device record and a blueprint from only the fields a test is about."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.messages.blueprint import Blueprint
from shared.messages.inventory import DeviceRecord

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def device(device_id: str, device_class: str = "rpi5", **labels: str) -> DeviceRecord:
    return DeviceRecord(
        device_id=device_id,
        device_class=device_class,
        arch="aarch64",
        ram_mb=8192,
        cpu_count=4,
        onnxruntime_version="1.20.1",
        agent_version="1",
        labels=labels,
        first_seen=T0,
        hello_at=T0,
        active_at=T0,
        last_seen=T0,
    )


def blueprint(name: str, *, labels: dict[str, str] | None = None, **spec: Any) -> Blueprint:
    """A blueprint selecting `labels`, tracking tiny-embedder@stable unless `spec` says otherwise."""
    fields: dict[str, Any] = {"selector": {"labels": labels or {}}, "model": "tiny-embedder", "track": "stable"} | spec
    return Blueprint.model_validate(
        {"apiVersion": "slmops.dev/v1", "kind": "Blueprint", "metadata": {"name": name}, "spec": fields}
    )
