"""The intake's wiring: the device reports it validates. Declarations only; see `shared.kit`.

Until the rollout and telemetry services consume them, nothing else reads what devices send: the
kit decodes each hello, status and telemetry window against its contract and dead-letters one that
fails with the validation message (`slmops.dlq.intake`), as docs/DEVICE_PROTOCOL.md promises; the
valid ones are counted and acked. Start-up also starts the sweep of the command stream
(`IntakeService.start_sweeping`), whose JetStream API calls are declared with `uses_api`.
"""

from __future__ import annotations

from services.intake.adapters.jetstream import SWEEP_API, JetStreamCommands
from services.intake.service import IntakeService
from services.intake.settings import IntakeSettings
from shared import topology
from shared.kit import Runtime, ServiceKit
from shared.messages.device import DeviceHello, DeviceStatus
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
        description=(
            "Validates every device hello and install status (telemetry windows: the telemetry service) and "
            "dead-letters invalid ones with the reason; "
            "dead-letters commands on subjects no installed service reads."
        ),
    )
    kit.follows(
        topology.INTAKE_DEVICE_REPORTS, {DeviceHello: IntakeService.accepted, DeviceStatus: IntakeService.accepted}
    )
    kit.uses_api(*SWEEP_API)  # the sweep of commands no service reads (adapters/jetstream.py)
    return kit
