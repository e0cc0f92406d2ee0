"""A service as declarations: what it accepts, answers, follows and emits; the kit does the rest.

A service's `app.py` creates a `ServiceKit`, declares its parts and returns it:

    kit = ServiceKit("registry", settings, build=build_service, description="...")
    kit.commands(topology.REGISTRY_COMMANDS, {RegisterModel: RegistryService.register_model, ...})
    kit.rpc(GET_MODEL, lambda registry, request: registry.get_model(request.name, request.ref))
    kit.emits(ModelRegistered, ...)

From that one set of declarations the kit builds both the running FastStream app (`app()`) and
the service's AsyncAPI document (`specification_broker()`), so the document cannot drift from the code.
Declarations are checked as they are made: a consumer must be one declared in `shared/topology.py`,
every message type it is given must travel on a subject its filter covers, and an operation must be
the service's own. At start-up the kit connects, checks that the streams and buckets it uses exist
(creating them is the admin's, `slmops stack init`), creates the service's durable consumers
(refusing one the server holds with another configuration), builds the service, and only then lets
messages in; the health subject answers "ready" after that. The same declarations are what the
service's credentials allow (`access()`, `shared.auth.permissions.for_service`).

How each message is settled (acks, DLQ, retries, replies) is `shared.kit.policy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from faststream import AckPolicy, FastStream
from faststream.message import StreamMessage
from faststream.nats import JStream, NatsBroker, NatsRouter, PullSub
from faststream.nats.annotations import NatsMessage
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry.trace import TracerProvider

from shared import subjects, topology
from shared.auth.permissions import ConsumerAccess, ServiceAccess, inbox_prefix
from shared.bus import REPLY_TO
from shared.kit.batch import Batch, BatchSettler, Puller, ack_all
from shared.kit.broker import documentation_broker, make_broker
from shared.kit.connection import ConnectionWatch, exit_process
from shared.kit.handlers import device_request_handler, durable_handler, payload_annotation, request_handler
from shared.kit.policy import DurablePolicy, Publisher, RequestPolicy, Settle
from shared.logs import setup_logging
from shared.messages.common import CommandOutcome
from shared.messages.envelope import Envelope, InvalidMessage, Message, decode, wire_model
from shared.messages.rpc import Rpc, RpcReply, ServiceHealth
from shared.outcomes import Outcome
from shared.settings import Settings
from shared.tracing import setup_tracing

S = TypeVar("S")
HEALTH = "health"
log = logging.getLogger("slmops.kit")
S_contra = TypeVar("S_contra", contravariant=True)
RequestT = TypeVar("RequestT", bound=Message)
ReplyT = TypeVar("ReplyT")


class CommandUseCase(Protocol[S_contra]):
    """What a command is handed to: `service.method(command, *, command_id=...)`."""

    def __call__(self, service: S_contra, command: Any, /, *, command_id: str) -> Awaitable[Outcome]: ...


class EventUseCase(Protocol[S_contra]):
    """What a followed message (an event, a device report) is handed to: `service.method(event, *, event_id=...)`."""

    def __call__(self, service: S_contra, event: Any, /, *, event_id: str) -> Awaitable[Outcome]: ...


# A use case with the message's id passed under the name its kind uses.
Dispatch = Callable[[S, Message, str], Awaitable[Outcome]]


class KitSetupError(TypeError):
    """A declaration contradicts the topology or the service's contract (a programming error)."""


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """What a service's `build` gets at start-up to construct its collaborators."""

    settings: Settings
    nc: Client
    js: JetStreamContext
    publisher: Publisher


@dataclass(frozen=True, kw_only=True)
class _Durable(Generic[S]):
    consumer: topology.DurableConsumer
    use_cases: Mapping[type[Message], Dispatch[S]]
    title: str
    enabled: bool


@dataclass(frozen=True, kw_only=True)
class _Ingest(Generic[S]):
    consumer: topology.DurableConsumer
    types: tuple[type[Message], ...]
    use_case: Callable[[S, Batch], Awaitable[object]]
    title: str
    dead_letters: bool = True


@dataclass(frozen=True, kw_only=True)
class _Request(Generic[S]):
    rpc: Rpc[Any, Any]
    answer: Callable[..., Awaitable[Any]]


@dataclass
class _Live(Generic[S]):
    """What start-up builds and the policies and handlers use once messages flow."""

    nc: Any = None
    publisher: Any = None
    service: Any = None
    ready: bool = False


@dataclass
class ServiceKit(Generic[S]):
    """The declarations of one service (see the module docstring).

    Args:
        name: the service's name: its subjects (`slmops.rpc.<name>.*`, `slmops.dlq.<name>`), its
            queue group, its log and trace name.
        settings: the process's settings (the service's own `Settings` subclass).
        build: builds the service object from the `Runtime`, once connected.
        description: one paragraph for the AsyncAPI document.
        stop: stops what `build` started in the background (its loops), on shutdown, after the
            batch consumers and before the connection closes.
    """

    name: str
    settings: Settings
    build: Callable[[Runtime], Awaitable[S]]
    description: str
    stop: Callable[[S], Awaitable[None]] | None = None
    _durables: list[_Durable[S]] = field(default_factory=list)
    _ingests: list[_Ingest[S]] = field(default_factory=list)
    _requests: list[_Request[S]] = field(default_factory=list)
    _events: list[type[Message]] = field(default_factory=list)
    _commands: list[type[Message]] = field(default_factory=list)
    _streams: list[tuple[type[Message], str, str, str]] = field(default_factory=list)
    _calls: list[Rpc[Any, Any]] = field(default_factory=list)
    _reads: list[str] = field(default_factory=list)
    _writes: list[str] = field(default_factory=list)
    _grants: list[str] = field(default_factory=list)

    # --- declarations ----------------------------------------------------------------------------

    def commands(
        self, consumer: topology.DurableConsumer, use_cases: Mapping[type[Message], CommandUseCase[S]]
    ) -> None:
        """Handle these command types from `consumer` (a consumer of SLMOPS_CMDS)."""
        if consumer.stream != topology.CMDS_STREAM:
            raise KitSetupError(
                f"{consumer.durable} reads {consumer.stream}; commands come from {topology.CMDS_STREAM}"
            )
        dispatch = {t: _with_command_id(u) for t, u in use_cases.items()}
        self._durable(consumer, dispatch, subject=subjects.command, title=f"{self.name} commands", enabled=True)

    def follows(
        self,
        consumer: topology.DurableConsumer,
        use_cases: Mapping[type[Message], EventUseCase[S]],
        *,
        enabled: bool = True,
    ) -> None:
        """React to these message types from `consumer` (events, or the device protocol's reports);
        `enabled=False` documents it without running it."""
        if consumer.stream == topology.CMDS_STREAM:
            raise KitSetupError(f"{consumer.durable} reads {consumer.stream}: declare its handlers with commands()")
        title = f"{self.name} follows {', '.join(t.TYPE for t in use_cases)}"
        dispatch = {t: _with_event_id(u) for t, u in use_cases.items()}
        self._durable(consumer, dispatch, subject=subjects.followed, title=title, enabled=enabled)

    def ingests(
        self,
        consumer: topology.DurableConsumer,
        types: tuple[type[Message], ...],
        use_case: Callable[[S, Batch], Awaitable[object]],
        *,
        dead_letters: bool = True,
    ) -> None:
        """Handle `types` from `consumer` a batch at a time (`shared.kit.batch`): for the paths at
        fleet rate, where one handler call per message would be the whole budget. The use case may
        return an `Outcome`, whose events are published before the batch is acked.

        `dead_letters=False`: invalid messages are acked and counted in `Batch.rejected`, not
        dead-lettered, because another service is the stream's validator of record and parks them
        already (one DLQ entry per bad message, not one per reader)."""
        if consumer.stream == topology.CMDS_STREAM:
            raise KitSetupError(f"{consumer.durable} reads {consumer.stream}: declare its handlers with commands()")
        self._check_durable(consumer, types, subject=subjects.followed)
        self._ingests.append(
            _Ingest(
                consumer=consumer,
                types=types,
                use_case=use_case,
                title=f"{self.name} ingests",
                dead_letters=dead_letters,
            )
        )

    def rpc(self, rpc: Rpc[RequestT, ReplyT], answer: Callable[[S, RequestT], Awaitable[ReplyT]]) -> None:
        """Answer `rpc` with `answer(service, request)`, load-balanced over replicas by a queue group."""
        if rpc.per_device:
            raise KitSetupError(f"{rpc.request.TYPE} is called per device: declare it with device_rpc()")
        self._add_request(rpc, answer)

    def device_rpc(
        self, rpc: Rpc[RequestT, ReplyT], answer: Callable[[S, RequestT, str | None], Awaitable[ReplyT]]
    ) -> None:
        """Answer `rpc` with `answer(service, request, device_id)`: `device_id` is the device that asks
        (it called on `<subject>.<device id>`, which only its credentials may publish to), or None
        for a caller on the bare subject (operators and services)."""
        if not rpc.per_device:
            raise KitSetupError(f"{rpc.request.TYPE} is not called per device: declare it with rpc()")
        self._add_request(rpc, answer)

    def calls(self, *rpcs: Rpc[Any, Any]) -> None:
        """The operations of other services this service calls (its credentials allow just these)."""
        self._calls.extend(rpcs)

    def reads(self, *buckets: str) -> None:
        """The KV buckets this service reads."""
        self._reads.extend(buckets)

    def writes(self, *buckets: str) -> None:
        """The KV buckets this service writes (and reads)."""
        self._writes.extend(buckets)

    def uses_api(self, *subjects: str) -> None:
        """Subjects beyond the declarations above this service publishes to (e.g. a JetStream API
        call on one stream); its credentials allow exactly these, so each is a visible decision."""
        self._grants.extend(subjects)

    def _add_request(self, rpc: Rpc[Any, Any], answer: Callable[..., Awaitable[Any]]) -> None:
        if rpc.service != self.name:
            raise KitSetupError(f"{rpc.request.TYPE} belongs to {rpc.service!r}; {self.name} cannot answer it")
        if rpc.operation == HEALTH:
            raise KitSetupError(f"{rpc.request.TYPE}: every service answers {HEALTH} already (the kit does)")
        if any(r.rpc.subject == rpc.subject for r in self._requests):
            raise KitSetupError(f"{rpc.request.TYPE} is declared twice")
        self._requests.append(_Request(rpc=rpc, answer=answer))

    def emits(self, *events: type[Message]) -> None:
        """The events this service publishes (anything else is refused when published)."""
        self._events.extend(events)

    def publishes(self, message: type[Message], *, address: str, grant: str, description: str) -> None:
        """A message this service publishes outside the event and command streams (e.g. rollups):
        `address` as the AsyncAPI document shows it, `grant` the subject pattern its credentials
        allow, so other systems find it in the document and nothing else may be published there."""
        self._streams.append((message, address, grant, description))

    def sends(self, *commands: type[Message]) -> None:
        """The commands this service queues for other services."""
        self._commands.extend(commands)

    def _durable(
        self,
        consumer: topology.DurableConsumer,
        use_cases: Mapping[type[Message], Dispatch[S]],
        *,
        subject: Callable[[type[Message]], str],
        title: str,
        enabled: bool,
    ) -> None:
        self._check_durable(consumer, tuple(use_cases), subject=subject)
        self._durables.append(_Durable(consumer=consumer, use_cases=dict(use_cases), title=title, enabled=enabled))

    def _check_durable(
        self,
        consumer: topology.DurableConsumer,
        types: tuple[type[Message], ...],
        *,
        subject: Callable[[type[Message]], str],
    ) -> None:
        declared = {c.durable: c for c in topology.DURABLE_CONSUMERS}
        if declared.get(consumer.durable) != consumer:
            raise KitSetupError(
                f"durable consumer {consumer.durable!r} is not the one declared in shared/topology.py; "
                "declare its whole configuration there, once"
            )
        taken = [d.consumer.durable for d in self._durables] + [i.consumer.durable for i in self._ingests]
        if consumer.durable in taken:
            raise KitSetupError(f"durable consumer {consumer.durable!r} is declared twice")
        if not types:
            raise KitSetupError(f"{consumer.durable}: no message types to handle")
        for message_type in types:
            if not consumer.covers(subject(message_type)):
                raise KitSetupError(
                    f"{message_type.TYPE} travels on {subject(message_type)}, which the filter of "
                    f"{consumer.durable} ({consumer.filter_subject}) does not cover"
                )

    # --- what the declarations become ------------------------------------------------------------

    def app(self) -> FastStream:
        """The service as its own process runs it: JSON logs and tracing installed, then `application()`."""
        setup_logging(self.name, self.settings.log_level)
        # A process whose connection is closed for good exits, for its supervisor to restart it.
        return self.application(
            tracer_provider=setup_tracing(self.settings, service=self.name), on_connection_closed=exit_process
        )

    def application(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        on_connection_closed: Callable[[], None] | None = None,
    ) -> FastStream:
        """The running service (broker, topology, consumers, handlers, health), leaving the process's
        logging and tracing alone, so a test or another program can embed it."""
        watch = ConnectionWatch(service=self.name, on_closed=on_connection_closed)
        broker = make_broker(self.settings, service=self.name, tracer_provider=tracer_provider, watch=watch)
        log = logging.getLogger(f"slmops.{self.name}")
        app = FastStream(broker, logger=log)
        live: _Live[S] = _Live()
        consumers = self._wire(broker, live, documenting=False)
        consumers += [self._tuned(i.consumer) for i in self._ingests]
        batches: list[_Running] = []

        @app.on_startup
        async def connect_and_build() -> None:
            await broker.connect()
            nc = broker.connection
            js = nc.jetstream()
            access = self.access()
            await topology.verify_topology(
                js, [c.stream for c in access.consumers] + [f"KV_{b}" for b in (*access.reads, *access.writes)]
            )
            for consumer in consumers:
                await topology.ensure_consumer(js, consumer)
            live.nc = nc
            live.publisher = Publisher(
                service=self.name, js=js, events=frozenset(self._events), commands=frozenset(self._commands)
            )
            live.service = await self.build(Runtime(settings=self.settings, nc=nc, js=js, publisher=live.publisher))
            for ingest in self._ingests:
                batches.append(await _start_ingest(self.name, self._tuned(ingest.consumer), ingest, live, js))
            live.ready = True
            log.info(f"{self.name} ready", extra={"nats": self.settings.nats_url, "s3": self.settings.s3_endpoint})

        @app.on_shutdown
        async def expect_the_close() -> None:  # the broker's close on shutdown is not a lost connection
            watch.stopping = True
            live.ready = False
            for running in batches:
                await running.stop()
            if self.stop is not None and live.service is not None:
                await self.stop(live.service)

        return app

    def specification_broker(self) -> NatsBroker:
        """A broker carrying every declaration, never connected: what the AsyncAPI document describes."""
        broker = documentation_broker(self.name)
        self._wire(broker, _Live(), documenting=True)
        return broker

    def access(self) -> ServiceAccess:
        """What the declarations let this service touch on the bus: its credentials' permissions
        (`shared.auth.permissions.for_service`) are made from this, so an undeclared use is refused."""
        enabled = [d.consumer for d in self._durables] + [i.consumer for i in self._ingests]
        return ServiceAccess(
            name=self.name,
            consumers=tuple(ConsumerAccess(stream=c.stream, durable=c.durable) for c in enabled),
            answers=tuple(r.rpc.subject for r in self._requests),
            publishes=tuple(
                [subjects.event(e) for e in self._events]
                + [subjects.command(c) for c in self._commands]
                + [grant for _, _, grant, _ in self._streams]
            ),
            calls=tuple(rpc.subject for rpc in self._calls),
            reads=tuple(self._reads),
            writes=tuple(self._writes),
            extra=tuple(self._grants),
        )

    def running_consumers(self) -> list[topology.DurableConsumer]:
        """The durable consumers this service reads when it runs (one a setting leaves off is not)."""
        return [d.consumer for d in self._durables if d.enabled] + [i.consumer for i in self._ingests]

    def dead_letters(self, durable: str) -> bool:
        """Whether this service parks the invalid messages of `durable` in its DLQ (every consumer
        does, but a batch ingest declared with `dead_letters=False`)."""
        return not any(i.consumer.durable == durable and not i.dead_letters for i in self._ingests)

    def request_contracts(self) -> list[Rpc[Any, Any]]:
        """The operations this service answers (their replies go into its AsyncAPI document)."""
        return [r.rpc for r in self._requests]

    def _tuned(self, consumer: topology.DurableConsumer) -> topology.DurableConsumer:
        return consumer.tuned(ack_wait_seconds=self.settings.ack_wait_seconds, max_deliver=self.settings.max_deliver)

    def _wire(self, broker: NatsBroker, live: _Live[S], *, documenting: bool) -> list[topology.DurableConsumer]:
        """Subscribe and declare everything on `broker`; returns the durable consumers subscribed to,
        as configured (a deployment's tunables applied unless documenting), for start-up to create."""
        consumers = []
        for durable in self._durables:
            if durable.enabled or documenting:
                consumer = durable.consumer if documenting else self._tuned(durable.consumer)
                self._wire_durable(broker, live, durable, consumer)
                consumers.append(consumer)
        if documenting:
            for ingest in self._ingests:
                self._document_ingest(broker, ingest)
        for request in self._requests:
            self._wire_request(broker, live, request)
        self._wire_health(broker, live)
        for event in self._events:
            broker.publisher(subjects.event(event), schema=wire_model(event), title=event.TYPE)
        for command in self._commands:
            broker.publisher(subjects.command(command), schema=wire_model(command), title=command.TYPE)
        for message, address, _, description in self._streams:
            broker.publisher(address, schema=wire_model(message), title=message.TYPE, description=description)
        broker.publisher(
            subjects.dlq(self.name),
            schema=bytes,
            title=f"{self.name} dead letters",
            description=(
                "Input the service could not accept: the original bytes, unchanged, with the reason in the "
                "Slmops-Dlq-Reason header (and Slmops-Dlq-Subject, Slmops-Dlq-Service)."
            ),
        )
        if any(d.consumer.stream == topology.CMDS_STREAM for d in self._durables):
            broker.publisher(
                "_INBOX.>",
                schema=CommandOutcome,
                title=f"{self.name} command outcomes",
                description="Sent, best effort, to the inbox a command names in its Slmops-Reply-To header.",
            )
        return consumers

    def _wire_durable(
        self, broker: NatsBroker, live: _Live[S], durable: _Durable[S], consumer: topology.DurableConsumer
    ) -> None:
        policy = DurablePolicy(service=self.name, consumer=consumer, live=live)
        router = NatsRouter(middlewares=[functools.partial(Settle, policy=policy)])
        types = tuple(durable.use_cases)

        def bound(use_case: Dispatch[S]) -> Callable[[Message, str], Awaitable[Outcome]]:
            return lambda payload, message_id: use_case(live.service, payload, message_id)

        router.subscriber(
            consumer.filter_subject,
            stream=JStream(name=consumer.stream, declare=False),
            durable=consumer.durable,
            pull_sub=PullSub(batch_size=consumer.batch_size, timeout=consumer.fetch_timeout_seconds),
            # nats-py's pull subscriptions take their inbox from here, not from the connection: the
            # service's own, the only inbox its credentials may read.
            inbox_prefix=f"{inbox_prefix('service', self.name)}.".encode(),
            config=consumer.consumer_config(),
            ack_policy=AckPolicy.MANUAL,
            decoder=_decoder(types),
            title=durable.title,
            description=f"{consumer.description} {self._settling(consumer)}",
        )(durable_handler(types, {t: bound(u) for t, u in durable.use_cases.items()}))
        broker.include_router(router)

    def _document_ingest(self, broker: NatsBroker, ingest: _Ingest[S]) -> None:
        """The batch consumer as the AsyncAPI document shows it (it runs on `shared.kit.batch`)."""
        consumer = ingest.consumer

        async def never_called(envelope: Any) -> None:  # pragma: no cover (documentation only)
            return None

        never_called.__annotations__["envelope"] = payload_annotation(ingest.types)
        broker.subscriber(
            consumer.filter_subject,
            stream=JStream(name=consumer.stream, declare=False),
            durable=consumer.durable,
            pull_sub=PullSub(batch_size=consumer.batch_size, timeout=consumer.fetch_timeout_seconds, batch=True),
            config=consumer.consumer_config(),
            title=ingest.title,
            description=(
                f"{consumer.description} Fetched {consumer.batch_size} at a time. Each message is a JSON envelope "
                f"of one of the types below; one that is not goes to {subjects.dlq(self.name)} with the reason "
                f"and is not retried; a batch whose handling fails is tried again with back-off, "
                f"{consumer.max_deliver} times at most."
            ),
        )(never_called)

    def _settling(self, consumer: topology.DurableConsumer) -> str:
        """How this channel's messages are settled, for the document's readers."""
        note = (
            f"Each message is a JSON envelope of one of the types below, with Nats-Msg-Id = its id. One that is "
            f"not, or that the service rejects, goes to {subjects.dlq(self.name)} with the reason and is not "
            f"retried; one whose handling fails is tried again with back-off, {consumer.max_deliver} times at most."
        )
        if consumer.stream == topology.CMDS_STREAM:
            note += f" A sender that names an inbox in the {REPLY_TO} header gets the CommandOutcome there."
        return note

    def _wire_request(self, broker: NatsBroker, live: _Live[S], request: _Request[S]) -> None:
        router = NatsRouter(
            middlewares=[functools.partial(Settle, policy=RequestPolicy(service=self.name, rpc=request.rpc))]
        )
        if request.rpc.per_device:
            handler = device_request_handler(
                request.rpc.request,
                request.rpc.subject,
                lambda payload, device: request.answer(live.service, payload, device),
            )
            for subject in (request.rpc.subject, f"{request.rpc.subject}.*"):
                router.subscriber(
                    subject,
                    queue=self.name,
                    parser=_inbox_replies_only,
                    decoder=_decoder((request.rpc.request,)),
                    title=f"{self.name} {request.rpc.operation}" + (" (per device)" if subject.endswith("*") else ""),
                    description=request.rpc.request.__doc__,
                )(handler)
            broker.include_router(router)
            return
        router.subscriber(
            request.rpc.subject,
            queue=self.name,
            parser=_inbox_replies_only,
            decoder=_decoder((request.rpc.request,)),
            title=f"{self.name} {request.rpc.operation}",
            description=request.rpc.request.__doc__,
        )(request_handler(request.rpc.request, lambda payload: request.answer(live.service, payload)))
        broker.include_router(router)

    def _wire_health(self, broker: NatsBroker, live: _Live[S]) -> None:
        # The ping's body is never read, so it is never parsed: FastStream's own decoder would, and a
        # body nested 100,000 deep raised there and left the caller without an answer.
        @broker.subscriber(
            subjects.rpc(self.name, HEALTH),
            title=f"{self.name} {HEALTH}",
            parser=_inbox_replies_only,
            decoder=_ignore_body,
        )
        async def health(msg: NatsMessage) -> bytes:
            ready = live.ready and live.nc is not None and live.nc.is_connected
            reply = RpcReply[ServiceHealth](ok=ready, result=ServiceHealth(service=self.name, ready=ready))
            return reply.model_dump_json().encode()


async def _inbox_replies_only(msg: Msg, original: Callable[[Msg], Awaitable[StreamMessage[Any]]]) -> StreamMessage[Any]:
    """Answer a request only on an inbox: its reply subject is the caller's to choose, and answering
    `$KV.models.x` or `slmops.evt.…` would publish there with the service's permissions, not the
    caller's. Any other reply subject gets no answer (and is logged)."""
    message = await original(msg)
    if message.reply_to and not subjects.valid_inbox(message.reply_to):
        log.warning("request not answered: its reply subject is not an inbox", extra={"subject": msg.subject})
        message.reply_to = ""
    return message


async def _ignore_body(message: StreamMessage[Any]) -> None:
    """The health ping's decoder: whatever the body, there is nothing in it to read."""
    return None


def _decoder(types: tuple[type[Message], ...]) -> Callable[[StreamMessage[Any]], Awaitable[Envelope[Any]]]:
    """FastStream's decoder for a subscriber: the platform's `decode`, so every reason reads the same."""

    async def decode_envelope(message: StreamMessage[Any]) -> Envelope[Any]:
        envelope = decode(message.body, expected=types)
        subject = getattr(message.raw_message, "subject", None)
        expected = subjects.reported_on(envelope.data)
        if subject is not None and expected is not None and subject != expected:
            # A device's identity is the subject its credentials let it publish on, never the payload.
            raise InvalidMessage(
                f"{envelope.type} for device {envelope.data.device_id} must travel on {expected}, not {subject}"
            )
        return envelope

    return decode_envelope


def _with_command_id(use_case: CommandUseCase[S]) -> Dispatch[S]:
    return lambda service, command, message_id: use_case(service, command, command_id=message_id)


def _with_event_id(use_case: EventUseCase[S]) -> Dispatch[S]:
    return lambda service, event, message_id: use_case(service, event, event_id=message_id)


@dataclass
class _Running:
    """One batch consumer's loop, and how to stop it."""

    puller: Puller
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.puller.stop()


async def _start_ingest(
    service: str, consumer: topology.DurableConsumer, ingest: _Ingest[Any], live: _Live[Any], js: JetStreamContext
) -> _Running:
    puller = Puller(nc=live.nc, consumer=consumer, inbox_prefix=inbox_prefix("service", service))
    await puller.start()
    settler = BatchSettler(service=service, consumer=consumer, types=ingest.types, js=js, nc=live.nc)

    async def loop() -> None:
        while True:
            msgs = await puller.next_batch()
            valid, invalid = settler.split(msgs)
            if not invalid:
                parked = []
            elif ingest.dead_letters:
                parked = await settler.dead_letter(invalid)
            else:
                parked = [msg for msg, _ in invalid]  # another service parks them: acked below, counted
            try:
                outcome = await ingest.use_case(
                    live.service, Batch(messages=[d for _, d in valid], rejected=len(invalid))
                )
                if isinstance(outcome, Outcome):  # events the batch implies
                    await live.publisher.outcome(outcome)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await settler.failed([m for m, _ in valid], exc)
                await ack_all(parked)
                continue
            await ack_all([m for m, _ in valid] + parked)

    return _Running(puller=puller, task=asyncio.create_task(loop(), name=f"{service} ingest {consumer.durable}"))
