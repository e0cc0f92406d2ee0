"""The intake's use case: sweep the command stream of commands no service will read.

(It also validated every device report until the services that consume them did: the rollout
service dead-letters an invalid hello or status, the telemetry service an invalid window.)

The sweep (`domain` has the rules) runs every `SLMOPS_INTAKE_SWEEP_SECONDS` in the service's own
task: a work queue cannot be consumed "for everything else", so the intake asks the stream which
subjects hold messages and dead-letters those no service will read, telling a sender that waits
(`Slmops-Reply-To`) at once. Order per message: DLQ copy (idempotent by stream position), then
delete, then reply; a crash between the first two repeats the copy, which the DLQ de-duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from services.intake.domain import (
    Claimed,
    Orphaned,
    Waiting,
    claimant,
    command_id,
    reply_inbox,
    unclaimed_since,
    verdict,
)
from services.intake.errors import StreamUnavailable
from services.intake.ports import CommandStream, StoredCommand
from shared.messages.common import CommandOutcome
from shared.topology import DurableConsumer

log = logging.getLogger("slmops.intake")


@dataclass
class SweepReport:
    """What one sweep found and did."""

    dead_lettered: list[tuple[StoredCommand, str]] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)  # subject -> the declared consumer it waits for
    claimed: dict[str, str] = field(default_factory=dict)  # subject -> the server consumer that reads it


class IntakeService:
    """Keeps the command stream free of orphans.

    Args:
        commands: the command stream.
        declared: every command consumer `shared/topology.py` declares.
        grace_seconds: how long a declared consumer may be missing from the server before the
            commands it would read are dead-lettered.
        sweep_limit: messages dead-lettered per sweep at most, so one sweep is bounded in time.
        clock: seconds, monotonic (a test passes its own).
    """

    def __init__(
        self,
        *,
        commands: CommandStream,
        declared: Sequence[DurableConsumer],
        grace_seconds: float,
        sweep_limit: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._commands = commands
        self._declared = tuple(declared)
        self._grace = grace_seconds
        self._limit = sweep_limit
        self._clock = clock
        self._unclaimed: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> SweepReport:
        """Dead-letter the commands no service will read (see `domain`); leave everything else."""
        on_server = await self._commands.consumers()
        held = await self._commands.subjects()
        now = self._clock()
        self._unclaimed = unclaimed_since(self._unclaimed, [s for s in held if claimant(s, on_server) is None], now=now)
        verdicts = {
            subject: verdict(
                subject,
                on_server=on_server,
                declared=self._declared,
                unclaimed_for=now - self._unclaimed.get(subject, now),
                grace=self._grace,
            )
            for subject in sorted(held)
        }
        report = SweepReport()
        for subject, found in verdicts.items():
            if isinstance(found, Claimed):
                report.claimed[subject] = found.consumer
            elif isinstance(found, Waiting):
                report.waiting[subject] = found.consumer
            else:
                budget = self._limit - len(report.dead_lettered)
                if budget <= 0:
                    break  # the rest next sweep
                for message in await self._commands.messages(subject, limit=budget):
                    await self._dead_letter(message, found)
                    report.dead_lettered.append((message, found.reason))
        return report

    def start_sweeping(self, every: float) -> asyncio.Task[None]:
        """Run `sweep` every `every` seconds in a task of the running loop, until the connection closes
        (the kit has no shutdown hook: a closed connection is how the process says it is stopping)."""
        self._task = asyncio.get_running_loop().create_task(self._sweep_forever(every), name="intake-sweep")
        return self._task

    async def _sweep_forever(self, every: float) -> None:
        while not self._commands.closed:
            try:
                report = await self.sweep()
            except StreamUnavailable as exc:
                log.warning("sweep failed, will retry", extra={"error": str(exc)})
            except Exception:  # a bug: say so loudly, and keep the intake sweeping
                log.exception("sweep failed")
            else:
                if report.waiting:
                    log.info("commands wait for their service", extra={"waiting": report.waiting})
            await asyncio.sleep(every)

    async def _dead_letter(self, message: StoredCommand, orphaned: Orphaned) -> None:
        await self._commands.dead_letter(message, reason=orphaned.reason)
        await self._commands.delete(message)
        log.warning(
            "command dead-lettered",
            extra={"subject": message.subject, "position": message.position, "reason": orphaned.reason},
        )
        if inbox := reply_inbox(message.headers):
            sender_id = command_id(message.body, message.headers, message.position)
            await self._commands.reply(
                inbox, CommandOutcome(command_id=sender_id, status="rejected", reason=orphaned.reason)
            )
