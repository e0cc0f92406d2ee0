"""What every service process has in common: logs, tracing, the broker, topology, health.

A service's `app.py` calls `service_app()` with the coroutine that builds its runtime, then adds its
own handlers. Start-up connects and builds the runtime *before* the broker starts its subscribers,
so no handler can see a message while the service is still missing; the health subject answers
"ready" only after that.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from faststream import FastStream
from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage
from nats.js import JetStreamContext

from shared import subjects, topology
from shared.bus import make_broker
from shared.logs import setup_logging
from shared.messages.common import RpcReply
from shared.settings import Settings
from shared.tracing import setup_tracing


def service_app(
    service: str, settings: Settings, *, start: Callable[[NatsBroker, JetStreamContext], Awaitable[None]]
) -> tuple[FastStream, NatsBroker]:
    """A FastStream app for `service` whose start-up ends by awaiting `start(broker, js)`."""
    setup_logging(service, settings.log_level)
    broker = make_broker(settings, service=service, tracer_provider=setup_tracing(settings, service=service))
    log = logging.getLogger(f"slmops.{service}")
    app = FastStream(broker, logger=log)
    ready = False

    @app.on_startup
    async def connect_and_build() -> None:
        nonlocal ready
        await broker.connect()
        js = broker.connection.jetstream()
        await topology.ensure_topology(js)
        await start(broker, js)
        ready = True
        log.info(f"{service} ready", extra={"nats": settings.nats_url, "s3": settings.s3_endpoint})

    @broker.subscriber(subjects.health(service), title=f"{service} health")
    async def health(msg: NatsMessage) -> bytes:
        return RpcReply(ok=ready, result={"service": service, "ready": ready}).model_dump_json().encode()

    return app, broker
