"""A device's part of a rollout's trace: one `device.install` span per install it acts on.

The rollout service writes the W3C `traceparent` of its own span into every desired state
(`DesiredState.traceparent`). A device continues that trace: the install of that desired state is
a span whose parent is the rollout's, so `slmops trace ROLLOUT_ID` (and Jaeger) show each device's
install under the wave that asked for it, with its outcome. The rollout's sampling decision is
kept: a traceparent whose flags say "not sampled" gives a span that records nothing.

A desired state without a traceparent (written by hand, `slmops device assign`) still gets a span,
the root of a new trace: an install worth looking at on a bench device is worth a trace too, and
the rule stays one rule (every install is one span) for the agent and the simulator alike.

The agent starts the span before `install.converge` and makes it current, so the steps' spans
(`local_install.py`) are its children; it ends it with the outcome. The fleet simulator, ten
thousand installs in one process, has no step spans and records its span in one call once the
install is over (`record_install_span`, with the start time it noted): an open SDK span holds
about 3 KB, as much again as a quarter of a simulated device, and nothing wraps the install's
coroutine, so no frame is added to the chain each of its awaits resumes through. With a no-op
tracer (tracing off) both return at once, before parsing anything.

Attributes: `slmops.device_id`, `slmops.device_class`, `slmops.digest`, `slmops.desired_revision`,
and when the desired state names them `slmops.rollout_id` and `slmops.wave`; at the end
`slmops.outcome` (`active`, `failed`, `cancelled` by a newer revision or the link going away,
`crashed`: a simulated crash, `error`: a bug) and `slmops.reason` for a failure. A failure is the
span's ERROR status, with the reason as its description.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, NoOpTracer, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.edge_agent.desired import Desired

INSTALL_SPAN: Final = "device.install"
# The agent's step spans, children of the install span (`local_install.py`).
DOWNLOAD_SPAN: Final = "device.download"
VERIFY_SPAN: Final = "device.verify"
LOAD_SPAN: Final = "device.load"
SMOKE_SPAN: Final = "device.smoke_test"
SWITCH_SPAN: Final = "device.switch"

_PROPAGATOR: Final = TraceContextTextMapPropagator()
_NOT_ERRORS: Final = frozenset({"active", "cancelled"})


@lru_cache(maxsize=64)
def parent_context(traceparent: str | None) -> Context:
    """The context an install starts in: the rollout's remote span, or an empty one (a new trace).

    Never the caller's current context: an install is part of the rollout's trace or of none, not
    of whatever the device happened to be doing when the desired state arrived. Cached (a context
    is immutable): the devices of a wave share a traceparent, and parsing it is a fifth of what a
    simulated install's span costs.
    """
    if traceparent is None:
        return Context()
    return _PROPAGATOR.extract({"traceparent": traceparent}, context=Context())


def start_install_span(tracer: Tracer, desired: Desired, *, device_id: str, device_class: str) -> Span:
    """Start (not activate) the span of the install of `desired` on this device.

    Args:
        tracer: the process's tracer; a `NoOpTracer` costs nothing here.
        desired: the desired state acted on, with its KV revision.
        device_id: the device installing.
        device_class: its class (what `slmops trace` groups devices by).

    Returns:
        The span, to end with `end_install_span`; a non-recording one when tracing is off.
    """
    if isinstance(tracer, NoOpTracer):
        return INVALID_SPAN
    return tracer.start_span(
        INSTALL_SPAN,
        context=parent_context(desired.state.traceparent),
        kind=SpanKind.CONSUMER,
        attributes=_attributes(desired, device_id=device_id, device_class=device_class),
    )


def record_install_span(
    tracer: Tracer,
    desired: Desired,
    *,
    device_id: str,
    device_class: str,
    started_ns: int,
    outcome: str,
    reason: str | None = None,
) -> None:
    """The span of an install that is over, in one call: started at `started_ns`, ended now.

    For an install with no step spans (the simulator's): the span exists only while it is
    recorded, rather than for the whole install.

    Args:
        tracer: the process's tracer; a `NoOpTracer` costs nothing here.
        desired: the desired state acted on, with its KV revision.
        device_id: the device that installed.
        device_class: its class.
        started_ns: when the install started (`time.time_ns()`).
        outcome: as for `end_install_span`.
        reason: as for `end_install_span`.
    """
    if isinstance(tracer, NoOpTracer):
        return
    span = tracer.start_span(
        INSTALL_SPAN,
        context=parent_context(desired.state.traceparent),
        kind=SpanKind.CONSUMER,
        attributes=_attributes(desired, device_id=device_id, device_class=device_class),
        start_time=started_ns,
    )
    end_install_span(span, outcome, reason=reason)


def end_install_span(span: Span, outcome: str, *, reason: str | None = None) -> None:
    """Record how the install ended and end its span.

    Args:
        span: from `start_install_span`.
        outcome: the final step reported (`active`, `failed`), or `cancelled`, `crashed`, `error`.
        reason: why it did not end `active` (the `failed` status's reason, the crash, the bug).
    """
    if not span.is_recording():
        return
    span.set_attribute("slmops.outcome", outcome)
    if reason is not None:
        span.set_attribute("slmops.reason", reason)
    if outcome == "active":
        span.set_status(StatusCode.OK)
    elif outcome not in _NOT_ERRORS:
        span.set_status(Status(StatusCode.ERROR, reason or outcome))
    span.end()


def _attributes(desired: Desired, *, device_id: str, device_class: str) -> dict[str, str | int]:
    state = desired.state
    attributes: dict[str, str | int] = {
        "slmops.device_id": device_id,
        "slmops.device_class": device_class,
        "slmops.digest": state.digest,
        "slmops.desired_revision": desired.revision,
    }
    if state.rollout_id is not None:
        attributes["slmops.rollout_id"] = state.rollout_id
    if state.wave is not None:
        attributes["slmops.wave"] = state.wave
    return attributes
