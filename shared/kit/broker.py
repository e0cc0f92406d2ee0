"""The FastStream NATS broker every service runs on, wired with OpenTelemetry."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from faststream.nats import NatsBroker, NatsUserPassword
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from opentelemetry.trace import TracerProvider

from shared.settings import Settings


def make_broker(
    settings: Settings, *, service: str, tracer_provider: TracerProvider | None = None, traced: bool = True
) -> NatsBroker:
    """A broker for `service`: consume and publish spans with trace propagation, JSON logs.

    Args:
        traced: False for a broker that only describes the service (the AsyncAPI export).
    """
    security = (
        NatsUserPassword(username=settings.nats_user, password=settings.nats_password or "")
        if settings.nats_user
        else None
    )
    middlewares: Sequence[Any] = [NatsTelemetryMiddleware(tracer_provider=tracer_provider)] if traced else []
    return NatsBroker(
        settings.nats_url,
        security=security,
        name=f"slmops-{service}",
        middlewares=middlewares,
        # FastStream logs every message received/processed; that is DEBUG detail here, and the
        # broker's logger goes through our JSON formatter like every other.
        logger=logging.getLogger(f"slmops.{service}.broker"),
        log_level=logging.DEBUG,
        graceful_timeout=15.0,
    )
