"""The telemetry service as its callers (the rollout service, the CLI, other tools) see it."""

from __future__ import annotations

from nats.aio.client import Client

from shared.clients.rpc import call
from shared.messages.telemetry import (
    EVALUATE_GATE,
    LIST_REPORTERS,
    SUMMARIZE,
    EvaluateGate,
    GateEvaluation,
    ListReporters,
    Summarize,
    TelemetrySummary,
)


class TelemetryClient:
    """Gate evaluations, summaries and a wave's reporting devices by request/reply.

    Args:
        nc: an open connection; the client does not close it.
        source: the envelope `source` of every request (e.g. `rollout`, `cli`).
        timeout: seconds to wait for an answer.

    Raises (every call): `BusError` when the telemetry service does not answer, `InvalidRequest`
    for a malformed request, and a plain `SlmopsError` when it failed; each carries the code the
    service answered with in `remote_code`.
    """

    def __init__(self, nc: Client, *, source: str, timeout: float = 10.0) -> None:
        self._nc = nc
        self._source = source
        self._timeout = timeout

    async def evaluate_gate(self, request: EvaluateGate) -> GateEvaluation:
        """The gate's verdict on the wave, with its numbers (and the gate.verdict it published)."""
        return await call(self._nc, EVALUATE_GATE, request, source=self._source, timeout=self._timeout)

    async def summarize(self, *, model_digest: str | None = None, seconds: float = 300) -> TelemetrySummary:
        """Every cohort's aggregate over the last `seconds` (of one digest, if given)."""
        request = Summarize(model_digest=model_digest, seconds=seconds)
        return await call(self._nc, SUMMARIZE, request, source=self._source, timeout=self._timeout)

    async def reporters(self, *, rollout_id: str, wave: int, digests: list[str] | None = None) -> set[str]:
        """Every device of the wave that has sent a window on one of `digests` (any, if none), all pages."""
        found: set[str] = set()
        after: str | None = None
        while True:
            request = ListReporters(rollout_id=rollout_id, wave=wave, digests=digests or [], after=after)
            page = await call(self._nc, LIST_REPORTERS, request, source=self._source, timeout=self._timeout)
            found.update(page.device_ids)
            if not page.more or not page.device_ids:
                return found
            after = page.device_ids[-1]
