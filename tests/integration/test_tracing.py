"""Trace context sent with a command is continued by the registry, through to its event."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from nats.aio.client import Client
from opentelemetry.sdk.trace import TracerProvider

from shared import bus
from shared.artifacts import ArtifactStore
from shared.messages.common import ObjectRef
from shared.messages.registry import RegisterModel
from shared.settings import Settings
from tests.support import sample_files, stream_messages, unique

pytestmark = pytest.mark.usefixtures("running_registry")


async def test_command_trace_continues_in_the_registry_and_its_event(
    nc: Client, artifacts: ArtifactStore, settings: Settings, tmp_path: Path
) -> None:
    model, _ = sample_files(tmp_path)
    name = unique("traced")
    tracer = TracerProvider().get_tracer("tests")
    with tracer.start_as_current_span("push from a pipeline") as span:
        trace_id = f"{span.get_span_context().trace_id:032x}"
        cmd = RegisterModel(name=name, version="1", artifact=ObjectRef(key=artifacts.upload_staging(model).key))
        _, outcome = await bus.send_command(nc, cmd, source="tests", wait=30)
    assert outcome is not None and outcome.status == "applied"

    ((_, headers),) = [
        (e, h)
        for e, h in await stream_messages(nc, "slmops.evt.model.registered")
        if e["data"]["record"]["name"] == name
    ]
    assert headers["traceparent"].split("-")[1] == trace_id, "the event must carry the command's trace"

    spans: list[dict[str, object]] = []
    for _ in range(50):
        lines = settings.traces_file.read_text().splitlines() if settings.traces_file.exists() else []
        spans = [s for s in map(json.loads, lines) if s["trace_id"] == trace_id]
        if spans:
            break
        await asyncio.sleep(0.1)
    assert spans, "the registry exported no span in the command's trace"
    assert {s["service"] for s in spans} == {"slmops-registry"}
    assert any("slmops.cmd.model" in str(s["name"]) for s in spans)
