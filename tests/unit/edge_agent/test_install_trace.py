"""A device continues the rollout's trace: the install of a desired state is a `device.install` span
under the span its `traceparent` names, with the device, the rollout, the wave and the outcome.

Every tracer here is a local provider's with an in-memory exporter: nothing touches the global one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracer, SpanKind, StatusCode, Tracer

from services.edge_agent.adapters.memory import MemoryLink, Offer
from services.edge_agent.desired import Desired
from services.edge_agent.install_trace import INSTALL_SPAN, end_install_span, record_install_span, start_install_span
from shared.errors import NotFound
from tests.unit.edge_agent.conftest import DEVICE, desired_state, want
from tests.unit.edge_agent.test_agent import running, settled

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
DIGEST = "1" * 64


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Iterator[Tracer]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("tests")
    provider.shutdown()


def only(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    (span,) = [s for s in exporter.get_finished_spans() if s.name == name]
    return span


async def finished(exporter: InMemorySpanExporter, name: str, *, count: int = 1) -> list[ReadableSpan]:
    """The finished spans called `name`, once there are `count` (the span ends just after the last status)."""
    async with asyncio.timeout(10):
        while len(spans := [s for s in exporter.get_finished_spans() if s.name == name]) < count:
            await asyncio.sleep(0.01)
    return spans


def hex_ids(span: ReadableSpan) -> tuple[str, str | None]:
    """(trace id, parent span id) as the traceparent writes them."""
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{span.parent.span_id:016x}" if span.parent else None


# --- the span itself ------------------------------------------------------------------------------


def test_the_install_span_continues_the_traceparent_with_the_rollout_attributes(
    tracer: Tracer, exporter: InMemorySpanExporter
) -> None:
    desired = Desired(state=desired_state(DIGEST, rollout_id="r1", wave=2, traceparent=TRACEPARENT), revision=7)
    end_install_span(start_install_span(tracer, desired, device_id=DEVICE, device_class="rpi5"), "active")
    span = only(exporter, INSTALL_SPAN)
    assert hex_ids(span) == (TRACE_ID, PARENT_ID)
    assert span.parent is not None and span.parent.is_remote and span.kind is SpanKind.CONSUMER
    assert dict(span.attributes or {}) == {
        "slmops.device_id": DEVICE,
        "slmops.device_class": "rpi5",
        "slmops.digest": DIGEST,
        "slmops.desired_revision": 7,
        "slmops.rollout_id": "r1",
        "slmops.wave": 2,
        "slmops.outcome": "active",
    }
    assert span.status.status_code is StatusCode.OK


def test_a_desired_state_set_by_hand_starts_a_new_trace(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    with tracer.start_as_current_span("whatever the device was doing"):  # not the install's parent
        span = start_install_span(
            tracer, Desired(state=desired_state(DIGEST), revision=1), device_id=DEVICE, device_class="rpi5"
        )
    end_install_span(span, "active")
    install = only(exporter, INSTALL_SPAN)
    assert install.parent is None
    assert "slmops.rollout_id" not in (install.attributes or {}) and "slmops.wave" not in (install.attributes or {})


def test_a_failure_is_an_error_with_its_reason(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    desired = Desired(state=desired_state(DIGEST, traceparent=TRACEPARENT), revision=1)
    span = start_install_span(tracer, desired, device_id=DEVICE, device_class="rpi5")
    end_install_span(span, "failed", reason="sha256 mismatch")
    install = only(exporter, INSTALL_SPAN)
    assert install.status.status_code is StatusCode.ERROR and install.status.description == "sha256 mismatch"
    assert (install.attributes or {})["slmops.outcome"] == "failed"
    assert (install.attributes or {})["slmops.reason"] == "sha256 mismatch"


def test_a_cancelled_install_is_no_error(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    span = start_install_span(
        tracer, Desired(state=desired_state(DIGEST), revision=1), device_id=DEVICE, device_class="x"
    )
    end_install_span(span, "cancelled")
    assert only(exporter, INSTALL_SPAN).status.status_code is StatusCode.UNSET


def test_an_unsampled_traceparent_records_nothing(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    unsampled = Desired(state=desired_state(DIGEST, traceparent=TRACEPARENT[:-2] + "00"), revision=1)
    span = start_install_span(tracer, unsampled, device_id=DEVICE, device_class="rpi5")
    end_install_span(span, "active")
    assert not span.is_recording() and exporter.get_finished_spans() == ()


def test_tracing_off_is_the_no_op_span() -> None:
    desired = Desired(state=desired_state(DIGEST, traceparent=TRACEPARENT), revision=1)
    span = start_install_span(NoOpTracer(), desired, device_id=DEVICE, device_class="rpi5")
    assert not span.is_recording()
    end_install_span(span, "failed", reason="nothing to record it")


# --- the agent ------------------------------------------------------------------------------------


async def test_the_agent_installs_inside_the_rollouts_trace_with_a_span_per_step(
    link: MemoryLink, tmp_path: Path, v1: Offer, tracer: Tracer, exporter: InMemorySpanExporter
) -> None:
    async with running(link, tmp_path, tracer=tracer):
        revision = link.desire(want(v1, rollout_id="r1", wave=0, traceparent=TRACEPARENT))
        await link.wait_for(settled(revision))
        (install,) = await finished(exporter, INSTALL_SPAN)
    assert hex_ids(install) == (TRACE_ID, PARENT_ID)
    attributes = dict(install.attributes or {})
    assert attributes["slmops.rollout_id"] == "r1" and attributes["slmops.wave"] == 0
    assert attributes["slmops.digest"] == v1.digest and attributes["slmops.desired_revision"] == revision
    assert attributes["slmops.device_id"] == DEVICE and attributes["slmops.outcome"] == "active"
    assert install.context is not None
    steps = [s for s in exporter.get_finished_spans() if s.parent and s.parent.span_id == install.context.span_id]
    assert [s.name for s in sorted(steps, key=lambda s: s.start_time or 0)] == [
        "device.download",
        "device.verify",
        "device.load",
        "device.smoke_test",
        "device.switch",
    ]
    assert all(hex_ids(s)[0] == TRACE_ID for s in steps)


async def test_a_failed_install_is_an_error_span(
    link: MemoryLink, tmp_path: Path, v1: Offer, tracer: Tracer, exporter: InMemorySpanExporter
) -> None:
    link.fail_next_urls(NotFound("no registered artifact has that digest"))
    async with running(link, tmp_path, tracer=tracer):
        await link.wait_for(settled(link.desire(want(v1, traceparent=TRACEPARENT))))
        (install,) = await finished(exporter, INSTALL_SPAN)
    assert install.status.status_code is StatusCode.ERROR
    assert (install.attributes or {})["slmops.outcome"] == "failed"
    assert "refused" in str((install.attributes or {})["slmops.reason"])


async def test_an_install_a_newer_revision_cancels_ends_as_cancelled(
    link: MemoryLink, tmp_path: Path, v1: Offer, v2: Offer, tracer: Tracer, exporter: InMemorySpanExporter
) -> None:
    held = link.hold(v1.digest)
    async with running(link, tmp_path, tracer=tracer):
        link.desire(want(v1, traceparent=TRACEPARENT))
        await link.wait_for(lambda statuses: v1.digest in link.url_requests)
        await link.wait_for(settled(link.desire(want(v2))))
        first, second = sorted(await finished(exporter, INSTALL_SPAN, count=2), key=lambda s: s.start_time or 0)
        held.set()
    assert (first.attributes or {})["slmops.outcome"] == "cancelled" and hex_ids(first)[0] == TRACE_ID
    assert (second.attributes or {})["slmops.outcome"] == "active" and second.parent is None


def test_an_install_recorded_once_over_keeps_its_start(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    desired = Desired(state=desired_state(DIGEST, rollout_id="r1", wave=1, traceparent=TRACEPARENT), revision=2)
    started = time.time_ns() - 3_000_000_000
    record_install_span(
        tracer, desired, device_id=DEVICE, device_class="jetson", started_ns=started, outcome="failed", reason="boom"
    )
    span = only(exporter, INSTALL_SPAN)
    assert span.start_time == started and (span.end_time or 0) - started >= 3_000_000_000
    assert hex_ids(span) == (TRACE_ID, PARENT_ID) and span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["slmops.device_class"] == "jetson"


def test_recording_with_tracing_off_does_nothing() -> None:
    desired = Desired(state=desired_state(DIGEST, traceparent=TRACEPARENT), revision=1)
    record_install_span(NoOpTracer(), desired, device_id=DEVICE, device_class="x", started_ns=0, outcome="active")
