"""The FastStream NATS broker every service runs on, wired with OpenTelemetry."""

from __future__ import annotations

import logging

from faststream.nats import NatsBroker, NatsUserPassword
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from opentelemetry.trace import TracerProvider

from shared.bus import credentials_options
from shared.kit.connection import ConnectionWatch
from shared.settings import Settings

# The server the published AsyncAPI documents name, whatever the environment that exports them says.
DOCUMENTED_SERVER = "nats://nats:4222"


def make_broker(
    settings: Settings,
    *,
    service: str,
    tracer_provider: TracerProvider | None = None,
    watch: ConnectionWatch | None = None,
) -> NatsBroker:
    """A broker for `service`: consume and publish spans with trace propagation, JSON logs; `watch`
    hears of the connection's losses and its close for good (`shared.kit.connection`)."""
    options = credentials_options(settings)
    security = (
        NatsUserPassword(username=settings.nats_user, password=settings.nats_password or "")
        if settings.nats_user and "user_credentials" not in options
        else None
    )
    identity = {k: v for k, v in options.items() if k in ("user_credentials", "inbox_prefix")}
    return NatsBroker(
        settings.nats_url,
        security=security,
        **identity,
        disconnected_cb=watch.disconnected if watch else None,
        reconnected_cb=watch.reconnected if watch else None,
        closed_cb=watch.closed if watch else None,
        name=f"slmops-{service}",
        middlewares=[NatsTelemetryMiddleware(tracer_provider=tracer_provider)],
        # FastStream logs every message received/processed; that is DEBUG detail here, and the
        # broker's logger goes through our JSON formatter like every other.
        logger=logging.getLogger(f"slmops.{service}.broker"),
        log_level=logging.DEBUG,
        graceful_timeout=15.0,
    )


def documentation_broker(service: str) -> NatsBroker:
    """A broker that only describes `service` (the AsyncAPI export): never connected, no security or
    tracing, and the same server address in every environment, so the document is reproducible."""
    return NatsBroker(DOCUMENTED_SERVER, name=f"slmops-{service}", logger=logging.getLogger(f"slmops.{service}.broker"))
