"""The kit refuses, as it is declared, a service whose declarations contradict the topology or its contract."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from shared import subjects, topology
from shared.kit import KitSetupError, ServiceKit
from shared.messages.device import DeviceHello, DeviceStatus, TelemetryWindow
from shared.messages.envelope import Message
from shared.messages.optimizer import OptimizeModel
from shared.messages.registry import GET_MODEL, ModelRegistered, RegisterModel, SetAlias
from shared.messages.rpc import Rpc
from shared.outcomes import Outcome
from shared.settings import Settings


class Nothing:
    """A service object the declarations below never run."""

    async def handle(self, payload: Any, *, command_id: str) -> Outcome:
        return Outcome(status="unchanged")

    async def follow(self, payload: Any, *, event_id: str) -> Outcome:
        return Outcome(status="unchanged")


async def _build(runtime: Any) -> Nothing:
    return Nothing()


def kit(name: str = "registry") -> ServiceKit[Nothing]:
    return ServiceKit(name, Settings(), build=_build, description="a test service")


def test_a_consumer_must_be_the_one_declared_in_the_topology() -> None:
    tweaked = replace(topology.REGISTRY_COMMANDS, batch_size=50)
    with pytest.raises(KitSetupError, match="not the one declared in shared/topology.py"):
        kit().commands(tweaked, {RegisterModel: Nothing.handle})


def test_a_command_type_must_travel_on_a_subject_the_filter_covers() -> None:
    uncovered = r"slmops\.cmd\.optimize\.request, which the filter of registry-commands \(slmops\.cmd\.model\.>\)"
    with pytest.raises(KitSetupError, match=uncovered):
        kit().commands(topology.REGISTRY_COMMANDS, {OptimizeModel: Nothing.handle})


def test_commands_come_from_the_command_stream_and_nothing_else_does() -> None:
    with pytest.raises(KitSetupError, match="commands come from SLMOPS_CMDS"):
        kit().commands(topology.OPTIMIZER_AUTO, {ModelRegistered: Nothing.handle})
    with pytest.raises(KitSetupError, match="declare its handlers with commands"):
        kit().follows(topology.REGISTRY_COMMANDS, {RegisterModel: Nothing.follow})


def test_a_followed_type_must_travel_on_a_subject_the_filter_covers() -> None:
    with pytest.raises(KitSetupError, match=r"model\.alias\.set travels on slmops\.evt\.model\.alias\.set"):
        kit("optimizer").follows(topology.OPTIMIZER_AUTO, {SetAlias: Nothing.follow})


@pytest.mark.parametrize(
    ("message", "pattern"),
    [
        (ModelRegistered, "slmops.evt.model.registered"),
        (DeviceHello, "slmops.device.*.hello"),
        (DeviceStatus, "slmops.device.*.status"),
        (TelemetryWindow, "slmops.telemetry.*"),
    ],
)
def test_followed_messages_travel_on_the_event_subject_or_every_devices(message: type[Any], pattern: str) -> None:
    """A consumer of SLMOPS_DEVICE (the rollout service's) must cover every device's reports, not one's."""
    assert subjects.followed(message) == pattern
    assert topology.subject_matches("slmops.device.>", pattern) is pattern.startswith("slmops.device.")
    assert not topology.subject_matches("slmops.device.dev-1.hello", "slmops.device.*.hello")


def test_a_consumer_is_declared_once() -> None:
    service = kit()
    service.commands(topology.REGISTRY_COMMANDS, {RegisterModel: Nothing.handle})
    with pytest.raises(KitSetupError, match="declared twice"):
        service.commands(topology.REGISTRY_COMMANDS, {SetAlias: Nothing.handle})


def test_a_service_answers_only_its_own_operations_once() -> None:
    async def answer(service: Nothing, request: Any) -> Any:
        return None

    with pytest.raises(KitSetupError, match="registry.get belongs to 'registry'; optimizer cannot answer it"):
        kit("optimizer").rpc(GET_MODEL, answer)
    service = kit()
    service.rpc(GET_MODEL, answer)
    with pytest.raises(KitSetupError, match="declared twice"):
        service.rpc(GET_MODEL, answer)


def test_health_is_the_kits_own_operation() -> None:
    class Health(Message):
        TYPE = "registry.health"

    async def answer(service: Nothing, request: Any) -> Any:
        return None

    with pytest.raises(KitSetupError, match="every service answers health already"):
        kit().rpc(Rpc(Health, dict), answer)


def test_every_declared_durable_consumer_has_a_unique_name_and_non_overlapping_work_queue_filter() -> None:
    """A work-queue stream refuses two consumers whose filters overlap; catch it here, not at start-up."""
    durables = [c.durable for c in topology.DURABLE_CONSUMERS]
    assert len(durables) == len(set(durables))
    commands = [c for c in topology.DURABLE_CONSUMERS if c.stream == topology.CMDS_STREAM]
    for a in commands:
        for b in commands:
            if a is not b:
                probe = a.filter_subject.replace(">", "x").replace("*", "x")
                assert not b.covers(probe), f"{a.durable} and {b.durable} overlap"


def test_the_server_allows_one_delivery_more_than_the_handler_attempts() -> None:
    consumer = topology.REGISTRY_COMMANDS.tuned(ack_wait_seconds=3, max_deliver=4)
    config = consumer.consumer_config()
    assert (config.max_deliver, config.ack_wait, config.filter_subject) == (5, 3, "slmops.cmd.model.>")


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("slmops.cmd.model.>", "slmops.cmd.model.register", True),
        ("slmops.cmd.model.>", "slmops.cmd.model.variant.register", True),
        ("slmops.cmd.model.>", "slmops.cmd.model", False),
        ("slmops.device.*.hello", "slmops.device.d-1.hello", True),
        ("slmops.device.*.hello", "slmops.device.d-1.x.hello", False),
        ("slmops.evt.model.registered", "slmops.evt.model.registered", True),
        ("slmops.evt.model.registered", "slmops.evt.model.registered.x", False),
    ],
)
def test_subject_matching_follows_nats_wildcards(pattern: str, subject: str, matches: bool) -> None:
    assert topology.subject_matches(pattern, subject) is matches


async def _ingest(service: Nothing, batch: Any) -> None:
    return None


def test_a_batch_consumer_is_checked_like_any_other_and_granted_its_durable() -> None:
    tweaked = replace(topology.TELEMETRY_WINDOWS, batch_size=7)
    with pytest.raises(KitSetupError, match="not the one declared in shared/topology.py"):
        kit("telemetry").ingests(tweaked, (TelemetryWindow,), _ingest)
    with pytest.raises(KitSetupError, match="declare its handlers with commands"):
        kit("telemetry").ingests(topology.REGISTRY_COMMANDS, (RegisterModel,), _ingest)
    with pytest.raises(KitSetupError, match=r"device\.hello travels on slmops\.device\.\*\.hello"):
        kit("telemetry").ingests(topology.TELEMETRY_WINDOWS, (DeviceHello,), _ingest)
    telemetry = kit("telemetry")
    telemetry.ingests(topology.TELEMETRY_WINDOWS, (TelemetryWindow,), _ingest)
    with pytest.raises(KitSetupError, match="declared twice"):
        telemetry.ingests(topology.TELEMETRY_WINDOWS, (TelemetryWindow,), _ingest)
    consumers = telemetry.access().consumers
    assert [(c.stream, c.durable) for c in consumers] == [("SLMOPS_TELEMETRY", "telemetry-windows")]
