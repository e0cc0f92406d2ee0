"""The intake's use case with the in-memory command stream: a
sweep dead-letters (then deletes, then tells the waiting sender) exactly the commands no service reads."""

from __future__ import annotations

import asyncio
import json

import pytest

from services.intake.adapters.memory import MemoryCommandStream
from services.intake.errors import StreamUnavailable
from services.intake.service import IntakeService
from shared import topology

DECLARED = (topology.REGISTRY_COMMANDS, topology.OPTIMIZER_COMMANDS)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def intake(
    stream: MemoryCommandStream, *, clock: Clock | None = None, grace: float = 60, limit: int = 100
) -> IntakeService:
    return IntakeService(
        commands=stream, declared=DECLARED, grace_seconds=grace, sweep_limit=limit, clock=clock or Clock()
    )


def with_registry() -> MemoryCommandStream:
    return MemoryCommandStream(server_consumers={"registry-commands": ["slmops.cmd.model.>"]})


async def test_a_command_on_an_unknown_subject_is_dead_lettered_deleted_and_its_sender_told() -> None:
    stream = with_registry()
    kept = stream.publish("slmops.cmd.model.register")
    body = json.dumps({"type": "modle.register", "id": "c-42"}).encode()
    stray = stream.publish("slmops.cmd.modle.register", body, headers={"Slmops-Reply-To": "_INBOX.cli.1"})

    report = await intake(stream).sweep()

    reason = (
        "no service handles slmops.cmd.modle.register: no command consumer's filter covers it "
        "(declared: slmops.cmd.model.>, slmops.cmd.optimize.>)"
    )
    assert stream.dead_letters == [(stray, reason)]
    assert list(stream.held) == [kept.position]
    ((inbox, outcome),) = stream.replies
    assert (inbox, outcome.command_id, outcome.status, outcome.reason) == ("_INBOX.cli.1", "c-42", "rejected", reason)
    assert report.claimed == {"slmops.cmd.model.register": "registry-commands"}


async def test_commands_of_a_service_not_installed_wait_out_the_grace_period() -> None:
    stream, clock = with_registry(), Clock()
    service = intake(stream, clock=clock, grace=60)
    first = stream.publish("slmops.cmd.optimize.request")

    assert (await service.sweep()).waiting == {"slmops.cmd.optimize.request": "optimizer-commands"}
    clock.now += 59
    second = stream.publish("slmops.cmd.optimize.request")
    await service.sweep()
    assert stream.dead_letters == []

    clock.now += 1
    report = await service.sweep()
    assert [m for m, _ in report.dead_lettered] == [first, second]
    assert stream.held == {}
    assert (
        "optimizer-commands (slmops.cmd.optimize.>) has not been on the server for 60 s" in report.dead_lettered[0][1]
    )


async def test_a_consumer_that_appears_within_the_grace_period_keeps_its_commands() -> None:
    stream, clock = with_registry(), Clock()
    service = intake(stream, clock=clock, grace=60)
    stream.publish("slmops.cmd.optimize.request")
    await service.sweep()

    stream.server_consumers["optimizer-commands"] = ["slmops.cmd.optimize.>"]
    clock.now += 3600
    report = await service.sweep()

    assert report.claimed == {"slmops.cmd.optimize.request": "optimizer-commands"}
    assert stream.dead_letters == [] and len(stream.held) == 1


async def test_a_sweep_dead_letters_at_most_its_limit_and_the_next_one_goes_on() -> None:
    stream = with_registry()
    for i in range(5):
        stream.publish(f"slmops.cmd.junk{i % 2}")
    service = intake(stream, limit=3)

    assert len((await service.sweep()).dead_lettered) == 3
    assert len((await service.sweep()).dead_lettered) == 2
    assert stream.held == {} and len(stream.dead_letters) == 5


async def test_a_command_whose_copy_the_dlq_refused_stays_in_the_stream() -> None:
    stream = with_registry()
    stray = stream.publish("slmops.cmd.junk")
    stream.dlq_down = True
    with pytest.raises(StreamUnavailable):
        await intake(stream).sweep()
    assert stream.held == {stray.position: stray} and stream.replies == []


async def test_sweeping_goes_on_after_a_failed_sweep_and_ends_when_the_connection_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = with_registry()
    stream.down = True
    stray = stream.publish("slmops.cmd.junk")
    task = intake(stream).start_sweeping(every=0.0)
    await asyncio.sleep(0)  # the first sweep fails: the server does not answer
    assert [r.message for r in caplog.records] == ["sweep failed, will retry"]
    stream.down = False
    while not stream.dead_letters:
        await asyncio.sleep(0)
    stream.closed = True
    await task
    assert [m for m, _ in stream.dead_letters] == [stray]
