"""The telemetry service's Prometheus metrics (prometheus-client), on its own registry per instance.

Counters for what ingest did, gauges for how far behind it is, and per cohort (over the last
minute) the error rate and latency quantiles, so a dashboard needs no query language of ours.
Cohort labels: the digest's first 12 characters, the class, the rollout (`-` by hand) and wave.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from shared.messages.telemetry import CohortStats

log = logging.getLogger("slmops.telemetry")
COHORT_LABELS = ("digest", "device_class", "rollout", "wave")


class TelemetryMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.windows = Counter("slmops_telemetry_windows", "Windows folded into the aggregates.", registry=r)
        self.rejected = Counter("slmops_telemetry_rejected", "Windows dead-lettered as invalid.", registry=r)
        self.duplicates = Counter(
            "slmops_telemetry_duplicates", "Windows delivered again and skipped (already folded).", registry=r
        )
        self.late = Counter("slmops_telemetry_late", "Windows older than the retention: counted, not kept.", registry=r)
        self.conflicts = Counter(
            "slmops_telemetry_fold_conflicts", "Appends to the fold log another instance got to first.", registry=r
        )
        self.gate_evaluations = Counter("slmops_telemetry_gate_evaluations", "Gates judged.", ["verdict"], registry=r)
        self.drift = Counter("slmops_telemetry_drift_detected", "drift.detected events.", ["metric"], registry=r)
        self.rollups = Counter("slmops_telemetry_rollups", "Cohort-minute rollups published.", registry=r)
        self.lag = Gauge(
            "slmops_telemetry_lag_windows", "Windows in the stream not yet delivered to the service.", registry=r
        )
        self.fold_position = Gauge("slmops_telemetry_fold_position", "Fold log position reflected.", registry=r)
        self.cohorts = Gauge("slmops_telemetry_cohort_buckets", "Cohort time buckets held in memory.", registry=r)
        self.error_rate = Gauge(
            "slmops_telemetry_cohort_error_rate", "Errors / requests over the last minute.", COHORT_LABELS, registry=r
        )
        self.latency = Gauge(
            "slmops_telemetry_cohort_latency_ms",
            "Latency quantile over the last minute (within the histogram's stated relative error).",
            [*COHORT_LABELS, "quantile"],
            registry=r,
        )
        self.requests = Gauge(
            "slmops_telemetry_cohort_requests", "Requests over the last minute.", COHORT_LABELS, registry=r
        )

    def serve(self, port: int) -> None:
        """Expose `/metrics` on `port` (a thread of prometheus-client's). A port already taken is
        logged, not fatal: the service's job is the aggregates, its metrics are a view of them."""
        try:
            start_http_server(port, registry=self.registry)
        except OSError as exc:
            log.error("cannot serve /metrics", extra={"port": port, "error": str(exc)})

    def show_cohorts(self, stats: Mapping[tuple[str, ...], CohortStats]) -> None:
        """Replace the per-cohort gauges with these cohorts' numbers."""
        for gauge in (self.error_rate, self.latency, self.requests):
            gauge.clear()
        for labels, s in stats.items():
            self.requests.labels(*labels).set(s.requests)
            if s.error_rate is not None:
                self.error_rate.labels(*labels).set(s.error_rate)
            for q, value in (("0.5", s.latency_p50_ms), ("0.95", s.latency_p95_ms), ("0.99", s.latency_p99_ms)):
                if value is not None:
                    self.latency.labels(*labels, q).set(value)


def cohort_labels(stats: CohortStats) -> tuple[str, ...]:
    c = stats.cohort
    return (c.model_digest[:12], c.device_class, c.rollout_id or "-", "-" if c.wave is None else str(c.wave))
