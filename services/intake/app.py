"""The intake's wiring: the sweep of the command stream. Declarations only; see `shared.kit`.

Start-up starts the sweep (`IntakeService.start_sweeping`), whose JetStream API calls are declared
with `uses_api`. Device reports are validated by the services that read them: hellos and statuses
by the rollout service (`slmops.dlq.rollout`), telemetry windows by the telemetry service; the
intake once read every report too, only to validate it, which cost a core's worth of CPU at
10,000 devices (docs/ARCHITECTURE.md, "Intake").
"""

from __future__ import annotations

from services.intake.adapters.jetstream import SWEEP_API, JetStreamCommands
from services.intake.service import IntakeService
from services.intake.settings import IntakeSettings
from shared import topology
from shared.kit import Runtime, ServiceKit
from shared.settings import load_settings

SERVICE = "intake"


def declare(settings: IntakeSettings | None = None) -> ServiceKit[IntakeService]:
    settings = settings or load_settings(IntakeSettings)

    async def build(runtime: Runtime) -> IntakeService:
        intake = IntakeService(
            commands=JetStreamCommands(runtime.nc, runtime.js, service=SERVICE),
            declared=[c for c in topology.DURABLE_CONSUMERS if c.stream == topology.CMDS_STREAM],
            grace_seconds=settings.intake_grace_seconds,
            sweep_limit=settings.intake_sweep_limit,
        )
        intake.start_sweeping(settings.intake_sweep_seconds)
        return intake

    kit = ServiceKit(
        SERVICE,
        settings,
        build=build,
        description=("Dead-letters commands on subjects no installed service reads, and tells their waiting sender."),
    )
    kit.uses_api(*SWEEP_API)  # the sweep of commands no service reads (adapters/jetstream.py)
    return kit
