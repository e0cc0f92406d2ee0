"""The blueprints service's wiring: the requests it answers, the events it follows, what it reads,
writes, sends and emits. Declarations only; see `shared.kit`."""

from __future__ import annotations

from services.blueprints.adapters.jetstream import (
    BusCommandSender,
    KvBlueprintStore,
    OptimizerOverBus,
    RegistryOverBus,
    WatchedFleet,
)
from services.blueprints.service import BlueprintService
from services.blueprints.settings import BlueprintsSettings
from shared import topology
from shared.clients import RegistryClient
from shared.kit import Runtime, ServiceKit
from shared.messages.blueprint_api import (
    APPLY_BLUEPRINTS,
    DELETE_BLUEPRINT,
    GET_BLUEPRINT,
    LIST_BLUEPRINTS,
    BlueprintApplied,
    BlueprintReconciled,
)
from shared.messages.optimizer import (
    LIST_PROFILES,
    OptimizationCompleted,
    OptimizationFailed,
    OptimizationProgress,
    OptimizeModel,
)
from shared.messages.registry import GET_MODEL, LIST_MODELS, SetAlias
from shared.messages.rollout import PauseRollout, ResumeRollout, StartRollout
from shared.outcomes import EventAnnouncer, Outcome
from shared.settings import load_settings

SERVICE = "blueprints"


async def _ignore(service: BlueprintService, event: object, *, event_id: str) -> Outcome:
    """Progress and completions: a completed build shows in the registry, which each pass reads."""
    return Outcome(status="unchanged")


def declare(settings: BlueprintsSettings | None = None) -> ServiceKit[BlueprintService]:
    settings = settings or load_settings(BlueprintsSettings)
    fleets: list[WatchedFleet] = []

    async def build(runtime: Runtime) -> BlueprintService:
        fleet = WatchedFleet(runtime.js)
        fleets[:] = [fleet]
        service = BlueprintService(
            store=KvBlueprintStore(runtime.js),
            fleet=fleet,
            registry=RegistryOverBus(RegistryClient(runtime.nc, source=SERVICE)),
            optimizer=OptimizerOverBus(runtime.nc, source=SERVICE),
            commands=BusCommandSender(runtime.nc, source=SERVICE),
            announcer=EventAnnouncer(runtime.publisher),
        )
        fleet.on_change = service.wake  # a device or rollout that moved is looked at without waiting a tick
        service.run_in_background(settings.blueprints_tick_seconds)
        if settings.blueprints_metrics_port is not None:
            service.metrics.serve(settings.blueprints_metrics_port)
        return service

    async def stop(service: BlueprintService) -> None:
        await service.stop()
        for fleet in fleets:
            await fleet.close()

    kit = ServiceKit(
        SERVICE,
        settings,
        build=build,
        stop=stop,
        description=(
            "Blueprints: the fleet's intended state as applied files, reconciled continuously: builds each "
            "class's variant of a new version, rolls the tracked alias out with the blueprint's policy, promotes."
        ),
    )
    kit.rpc(APPLY_BLUEPRINTS, BlueprintService.apply)
    kit.rpc(DELETE_BLUEPRINT, BlueprintService.delete)
    kit.rpc(LIST_BLUEPRINTS, BlueprintService.summaries)
    kit.rpc(GET_BLUEPRINT, BlueprintService.detail)
    kit.follows(
        topology.BLUEPRINTS_OPTIMIZATIONS,
        {
            OptimizationFailed: BlueprintService.on_optimization_failed,
            OptimizationCompleted: _ignore,
            OptimizationProgress: _ignore,
        },
    )
    kit.calls(GET_MODEL, LIST_MODELS, LIST_PROFILES)
    kit.sends(StartRollout, PauseRollout, ResumeRollout, OptimizeModel, SetAlias)
    kit.emits(BlueprintApplied, BlueprintReconciled)
    kit.reads(topology.KV_DEVICES, topology.KV_DESIRED, topology.KV_ROLLOUTS)
    kit.writes(topology.KV_BLUEPRINTS)
    return kit
