"""FastStream wiring for the optimizer: optimize commands in; progress, completed, failed events out.

The only module of the optimizer that imports FastStream. A search can take minutes: the shared
command policy keeps the message in progress meanwhile. With `SLMOPS_OPTIMIZER_AUTO_PROFILES`
set, every newly registered model that has an evaluation set is queued for those profiles, as
ordinary optimize commands with ids derived from (digest, profile), so a replay queues nothing twice.
"""

from __future__ import annotations

import logging
from typing import Any

from faststream import AckPolicy, FastStream
from faststream.nats import ConsumerConfig, DeliverPolicy, JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from nats.js import JetStreamContext

from services.optimizer.adapters.registry_bus import RegistryOverBus
from services.optimizer.errors import ProfileError, RegistryUnavailable
from services.optimizer.profiles import DEFAULT_DIR, load_profiles
from services.optimizer.service import OptimizerService
from shared import bus, subjects, topology
from shared.artifacts import ArtifactStore, StorageUnavailable
from shared.commands import CommandPolicy, Outcome, process_command, publish_event
from shared.messages.envelope import Envelope, InvalidMessage, decode, deterministic_id, wrap
from shared.messages.optimizer import OptimizationProgress, OptimizeModel
from shared.messages.registry import ModelRegistered
from shared.service_app import service_app
from shared.settings import Settings, load_settings

SERVICE = "optimizer"
log = logging.getLogger("slmops.optimizer")


class _Runtime:
    service: OptimizerService
    js: JetStreamContext


def build_app(settings: Settings | None = None) -> FastStream:
    settings = settings or load_settings()
    rt = _Runtime()
    profiles = load_profiles(settings.profiles_dir or DEFAULT_DIR)  # a bad profile file stops start-up here
    auto = [p.strip() for p in settings.optimizer_auto_profiles.split(",") if p.strip()]
    if unknown := sorted(set(auto) - set(profiles)):
        raise ProfileError(
            f"SLMOPS_OPTIMIZER_AUTO_PROFILES names unknown profiles {unknown}; known: {sorted(profiles)}"
        )

    async def start(broker: NatsBroker, js: JetStreamContext) -> None:
        rt.js = js
        rt.service = OptimizerService(
            registry=RegistryOverBus(broker.connection),
            blobs=ArtifactStore.from_settings(settings),
            profiles=profiles,
            threads=settings.optimizer_threads,
            concurrency=settings.optimizer_concurrency,
        )

    app, broker = service_app(SERVICE, settings, start=start)
    _command_handler(broker, rt, settings)
    if auto:
        _auto_handler(broker, rt, auto)
    return app


def _command_handler(broker: NatsBroker, rt: _Runtime, settings: Settings) -> None:
    consumer = topology.OPTIMIZER_COMMANDS
    policy = CommandPolicy(
        service=SERVICE,
        accepts=(OptimizeModel,),
        transient=(RegistryUnavailable, StorageUnavailable),
        ack_wait=settings.ack_wait_seconds,
        max_deliver=settings.max_deliver,
    )

    async def handle(envelope: Envelope[Any]) -> Outcome:
        async def progress(event: OptimizationProgress, event_id: str) -> None:
            await publish_event(rt.js, event, source=SERVICE, event_id=event_id)

        final = await rt.service.optimize(envelope.data, optimization_id=envelope.id, progress=progress)
        # A failed search is still a handled command: its answer is the optimization.failed event.
        event_id = deterministic_id(final.TYPE, envelope.id)
        return Outcome(status="applied", events=[(final, event_id)], result={"event": final.TYPE})

    @broker.subscriber(
        consumer.filter_subject,
        stream=JStream(name=consumer.stream, declare=False),
        durable=consumer.durable,
        pull_sub=PullSub(batch_size=1, timeout=5.0),
        config=ConsumerConfig(ack_wait=settings.ack_wait_seconds, max_deliver=settings.max_deliver + 1),
        ack_policy=AckPolicy.MANUAL,
        title="optimizer commands",
    )
    async def on_command(msg: NatsMessage) -> None:
        await process_command(msg.raw_message, policy=policy, handle=handle, nc=broker.connection, js=rt.js)


def _auto_handler(broker: NatsBroker, rt: _Runtime, profiles: list[str]) -> None:
    consumer = topology.OPTIMIZER_AUTO

    @broker.subscriber(
        consumer.filter_subject,
        stream=JStream(name=consumer.stream, declare=False),
        durable=consumer.durable,
        pull_sub=PullSub(batch_size=10, timeout=5.0),
        config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title="optimize new models",
    )
    async def on_registered(msg: NatsMessage) -> None:
        try:
            record = decode(msg.raw_message.data, expected=(ModelRegistered,)).data.record
        except InvalidMessage as exc:
            log.warning("ignoring an unreadable model.registered event", extra={"reason": exc.reason})
            return
        if record.eval_set is None:
            log.info("not optimizing a model without an evaluation set", extra={"model": record.name})
            return
        for profile in profiles:
            cmd = OptimizeModel(name=record.name, version=record.version, profile=profile)
            command_id = deterministic_id("auto-optimize", record.artifact.digest, profile)
            await bus.publish(rt.js, wrap(cmd, source=SERVICE, id=command_id), subjects.command(cmd))
