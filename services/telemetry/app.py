"""The telemetry service's wiring: what it ingests, answers and publishes. Declarations only; see `shared.kit`."""

from __future__ import annotations

import gc

from services.telemetry.adapters.jetstream import (
    FOLDS_API,
    JetStreamAnnouncer,
    JetStreamFoldLog,
    KvModelCatalog,
    KvSnapshots,
)
from services.telemetry.metrics import TelemetryMetrics
from services.telemetry.service import DriftPolicy, TelemetryService
from services.telemetry.settings import TelemetrySettings
from services.telemetry.view import TelemetryView
from shared import subjects, topology
from shared.kit import Runtime, ServiceKit
from shared.messages.device import TelemetryWindow, TelemetryWindowV1
from shared.messages.rollout import GateVerdict
from shared.messages.telemetry import EVALUATE_GATE, LIST_REPORTERS, SUMMARIZE, DriftDetected, TelemetryRollup
from shared.settings import load_settings

SERVICE = "telemetry"


def declare(settings: TelemetrySettings | None = None) -> ServiceKit[TelemetryService]:
    settings = settings or load_settings(TelemetrySettings)

    async def build(runtime: Runtime) -> TelemetryService:
        metrics = TelemetryMetrics()
        windows = topology.TELEMETRY_WINDOWS

        async def backlog() -> int:
            info = await runtime.js.consumer_info(windows.stream, windows.durable)
            return int(info.num_pending or 0)

        telemetry = TelemetryService(
            view=TelemetryView(
                bucket_seconds=settings.telemetry_bucket_seconds,
                retention_seconds=settings.telemetry_retention_seconds,
            ),
            log=JetStreamFoldLog(runtime.js),
            snapshots=KvSnapshots(runtime.js),
            announcer=JetStreamAnnouncer(runtime.js, runtime.publisher, source=SERVICE),
            metrics=metrics,
            rollup_seconds=settings.telemetry_rollup_seconds,
            rollup_grace_seconds=settings.telemetry_rollup_grace_seconds,
            source=SERVICE,
            backlog=backlog,
            drift_policy=DriftPolicy(
                period_seconds=settings.telemetry_drift_period_seconds,
                reference_periods=settings.telemetry_drift_reference_periods,
                debounce=settings.telemetry_drift_debounce,
                min_requests=settings.telemetry_drift_min_requests,
            ),
            catalog=KvModelCatalog(runtime.js),
        )
        await telemetry.start()
        # Ingest allocates a few dozen short-lived objects a window: at CPython's default threshold
        # (700) the collector runs every ~15 windows and walks everything the service holds. What
        # start-up built is frozen out of collection and collections are spaced out: ~20 % of the
        # ingest cost (make bench-telemetry). Nothing here holds reference cycles it relies on
        # the collector to free quickly.
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        telemetry.run_in_background(settings.telemetry_tick_seconds, snapshot_every=settings.telemetry_snapshot_seconds)
        if settings.telemetry_metrics_port is not None:
            metrics.serve(settings.telemetry_metrics_port)
        return telemetry

    kit = ServiceKit(
        SERVICE,
        settings,
        build=build,
        stop=TelemetryService.stop,
        description=(
            "Folds every device telemetry window, exactly once, into per-cohort aggregates (digest x class x "
            "rollout x wave); judges rollout gates against the baseline cohort; publishes per-minute rollups."
        ),
    )
    kit.ingests(
        topology.TELEMETRY_WINDOWS,
        (TelemetryWindow, TelemetryWindowV1),
        lambda telemetry, batch: telemetry.ingest(
            [(d.position, d.envelope.data) for d in batch.messages], rejected=batch.rejected
        ),
    )
    kit.rpc(EVALUATE_GATE, lambda telemetry, request: telemetry.evaluate_gate(request))
    kit.rpc(SUMMARIZE, lambda telemetry, request: telemetry.summarize(request))
    kit.rpc(LIST_REPORTERS, lambda telemetry, request: telemetry.reporters(request))
    kit.emits(GateVerdict, DriftDetected)
    kit.writes(topology.KV_TELEMETRY)
    kit.reads(topology.KV_MODELS)  # drift references from the models' evaluation sets
    kit.publishes(
        TelemetryRollup,
        address=subjects.ROLLUP + ".{digest}.{device_class}.{manual_or_rollout}",
        grant=f"{subjects.ROLLUP}.>",
        description=(
            "One cohort's minute, once it has ended and its grace passed (stream SLMOPS_ROLLUPS, Nats-Msg-Id = "
            "cohort + minute): slmops.rollup.<digest>.<class>.manual for devices on a model assigned by hand, "
            "slmops.rollup.<digest>.<class>.rollout.<rollout id>.<wave> for a rollout's."
        ),
    )
    kit.uses_api(*FOLDS_API)  # the fold log (adapters/jetstream.py)
    return kit
