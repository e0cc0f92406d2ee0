"""The optimizer's wiring: what it accepts, follows and emits. Declarations only; see `shared.kit`.

A search can take minutes: the kit's policy keeps the command in progress meanwhile. Profiles are
read (and checked) at start-up, so a bad profile file stops the service before it takes a command;
declaring it (for the AsyncAPI document) reads nothing.
"""

from __future__ import annotations

from services.optimizer.adapters.registry_bus import RegistryOverBus
from services.optimizer.errors import ProfileError
from services.optimizer.profiles import DEFAULT_DIR, load_profiles
from services.optimizer.service import OptimizerService
from services.optimizer.settings import OptimizerSettings
from shared import topology
from shared.artifacts import ArtifactStore
from shared.clients import RegistryClient
from shared.kit import Runtime, ServiceKit
from shared.messages.optimizer import (
    LIST_PROFILES,
    OptimizationCompleted,
    OptimizationFailed,
    OptimizationProgress,
    OptimizeModel,
)
from shared.messages.registry import GET_MODEL, ModelRegistered, RegisterVariant
from shared.settings import load_settings

SERVICE = "optimizer"


def declare(settings: OptimizerSettings | None = None) -> ServiceKit[OptimizerService]:
    settings = settings or load_settings(OptimizerSettings)

    async def build(runtime: Runtime) -> OptimizerService:
        profiles = load_profiles(settings.profiles_dir or DEFAULT_DIR)
        if unknown := sorted(set(settings.auto_profiles) - set(profiles)):
            raise ProfileError(
                f"SLMOPS_OPTIMIZER_AUTO_PROFILES names unknown profiles {unknown}; known: {sorted(profiles)}"
            )
        return OptimizerService(
            registry=RegistryOverBus(RegistryClient(runtime.nc, source=SERVICE)),
            blobs=ArtifactStore.from_settings(settings),
            profiles=profiles,
            threads=settings.optimizer_threads,
            concurrency=settings.optimizer_concurrency,
            auto_profiles=settings.auto_profiles,
            progress=runtime.publisher.event,
        )

    kit = ServiceKit(
        SERVICE,
        settings,
        build=build,
        description="Quantizes, prunes and measures ONNX models; registers the best variant for a device profile.",
    )
    kit.commands(topology.OPTIMIZER_COMMANDS, {OptimizeModel: OptimizerService.optimize})
    # Only with SLMOPS_OPTIMIZER_AUTO_PROFILES set; documented either way.
    kit.follows(
        topology.OPTIMIZER_AUTO,
        {ModelRegistered: OptimizerService.optimize_new_model},
        enabled=bool(settings.auto_profiles),
    )
    kit.emits(OptimizationProgress, OptimizationCompleted, OptimizationFailed)
    kit.sends(OptimizeModel, RegisterVariant)
    kit.rpc(LIST_PROFILES, OptimizerService.list_profiles)
    kit.calls(GET_MODEL)
    return kit
