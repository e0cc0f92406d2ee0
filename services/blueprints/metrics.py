"""The blueprints service's Prometheus metrics (prometheus-client), on its own registry per instance.

Counters for what the controller did (passes, actions by kind, rollouts the rollout service
refused), gauges per blueprint for how much of its fleet is where it should be, so a dashboard
shows a delivery's progress without reading KV.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from shared.messages.blueprint_api import BlueprintStatus, ReconcileAction

log = logging.getLogger("slmops.blueprints")


class BlueprintMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.passes = Counter("slmops_blueprints_passes", "Controller passes over every blueprint.", registry=r)
        self.failed_passes = Counter("slmops_blueprints_failed_passes", "Passes that raised (retried).", registry=r)
        self.actions = Counter("slmops_blueprints_actions", "Things the controller did.", ["kind"], registry=r)
        self.refused = Counter(
            "slmops_blueprints_rollouts_refused", "Rollouts the rollout service refused.", registry=r
        )
        self.converged = Gauge(
            "slmops_blueprints_devices_converged",
            "Owned devices on what the blueprint says.",
            ["blueprint"],
            registry=r,
        )
        self.pending = Gauge(
            "slmops_blueprints_devices_pending", "Owned devices not on it yet.", ["blueprint"], registry=r
        )

    def serve(self, port: int) -> None:
        """Expose `/metrics` on `port`; a port already taken is logged, not fatal."""
        try:
            start_http_server(port, registry=self.registry)
        except OSError as exc:
            log.error("cannot serve /metrics", extra={"port": port, "error": str(exc)})

    def reconciled(self, status: BlueprintStatus, actions: Sequence[ReconcileAction], *, refused: int) -> None:
        for action in actions:
            self.actions.labels(action.kind).inc()
        self.refused.inc(refused)
        self.converged.labels(status.name).set(status.converged)
        self.pending.labels(status.name).set(status.pending)

    def forget(self, name: str) -> None:
        """A deleted blueprint's gauges go with it."""
        for gauge in (self.converged, self.pending):
            try:
                gauge.remove(name)
            except KeyError:
                pass
