"""The rollout service's wiring: the commands it takes, the device reports it folds, what it writes,
calls and emits. Declarations only; see `shared.kit`."""

from __future__ import annotations

from services.rollout.adapters.jetstream import KvDesiredStore, KvDeviceStore, KvRolloutStore
from services.rollout.service import RolloutService
from services.rollout.settings import RolloutSettings
from shared import topology
from shared.clients import RegistryClient
from shared.clients.telemetry import TelemetryClient
from shared.kit import Runtime, ServiceKit
from shared.messages.device import DeviceHello, DeviceStatus
from shared.messages.registry import GET_MODEL
from shared.messages.rollout import (
    AbortRollout,
    GateVerdict,
    PauseRollout,
    ResumeRollout,
    RollbackRollout,
    RolloutCompleted,
    RolloutRolledBack,
    RolloutStarted,
    RolloutStateChanged,
    StartRollout,
    WaveCompleted,
    WaveStarted,
)
from shared.messages.telemetry import EVALUATE_GATE, LIST_REPORTERS
from shared.outcomes import EventAnnouncer
from shared.settings import load_settings

SERVICE = "rollout"


def declare(settings: RolloutSettings | None = None) -> ServiceKit[RolloutService]:
    settings = settings or load_settings(RolloutSettings)

    watched: list[KvRolloutStore | KvDesiredStore | KvDeviceStore] = []

    async def build(runtime: Runtime) -> RolloutService:
        rollouts, desired, devices = KvRolloutStore(runtime.js), KvDesiredStore(runtime.js), KvDeviceStore(runtime.js)
        watched[:] = [rollouts, desired, devices]
        rollout = RolloutService(
            rollouts=rollouts,
            desired=desired,
            devices=devices,
            registry=RegistryClient(runtime.nc, source=SERVICE),
            telemetry=TelemetryClient(runtime.nc, source=SERVICE),
            announcer=EventAnnouncer(runtime.publisher),
        )
        rollout.run_in_background(settings.rollout_tick_seconds)
        return rollout

    async def stop(rollout: RolloutService) -> None:
        await rollout.stop()
        for store in watched:
            await store.close()

    kit = ServiceKit(
        SERVICE,
        settings,
        build=build,
        stop=stop,
        description=(
            "Staged, gated rollouts: plans per-device variants and class-stratified waves over the inventory, "
            "writes desired states, judges waves through the telemetry service, reverts every touched device."
        ),
    )
    kit.commands(
        topology.ROLLOUT_COMMANDS,
        {
            StartRollout: RolloutService.on_start,
            PauseRollout: RolloutService.on_pause,
            ResumeRollout: RolloutService.on_resume,
            AbortRollout: RolloutService.on_abort,
            RollbackRollout: RolloutService.on_rollback,
        },
    )
    # The only reader of device reports: an invalid one is dead-lettered here (slmops.dlq.rollout).
    kit.ingests(
        topology.ROLLOUT_DEVICE_REPORTS,
        (DeviceHello, DeviceStatus),
        lambda rollout, batch: rollout.reports([(d.envelope.data, d.envelope.time) for d in batch.messages]),
    )
    kit.calls(GET_MODEL, EVALUATE_GATE, LIST_REPORTERS)
    kit.emits(RolloutStarted, RolloutStateChanged, WaveStarted, WaveCompleted, GateVerdict)
    kit.emits(RolloutCompleted, RolloutRolledBack)
    kit.writes(topology.KV_ROLLOUTS, topology.KV_DEVICES, topology.KV_DESIRED)
    return kit
