"""What the service keeps per cohort and time bucket: sums that merge exactly, never averages of averages.

An `Aggregate` is the fold of any set of windows, and two aggregates merge into the aggregate of
the union: counts add, latency histograms merge bucket by bucket (`shared.histogram`), output
moments merge by their counts (Chan et al.), shadow agreement is summed as agreeing requests over
compared requests, CPU and RAM keep a sum (for the mean over windows) and a maximum, and distinct
devices are a HyperLogLog (`distinct.DistinctCounter`). So the aggregate of a wave over half an
hour is the merge of its cohort's buckets in that range, as exact as one bucket.

Memory is per cohort and bucket, never per window: a bucket holds one histogram (at most 160
counts), one moment per output statistic and 1 KiB of distinct-device registers.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.telemetry.distinct import DistinctCounter
from services.telemetry.observations import Observation
from services.telemetry.statistics import Moments
from shared.histogram import ExponentialHistogram, relative_error
from shared.messages.device import SIMILARITY_BOUNDS
from shared.messages.telemetry import Cohort, CohortStats, OutputSummary

CohortKey = tuple[str, str, str | None, int | None]  # digest, class, rollout, wave


def cohort_of(key: CohortKey) -> Cohort:
    digest, device_class, rollout_id, wave = key
    return Cohort(model_digest=digest, device_class=device_class, rollout_id=rollout_id, wave=wave)


def bucket_of(moment: datetime, seconds: int) -> int:
    """The start (epoch seconds) of the time bucket `moment` falls in."""
    epoch = int(moment.timestamp())
    return epoch - epoch % seconds


def at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


@dataclass
class Aggregate:
    """The fold of a set of windows (see the module docstring)."""

    windows: int = 0
    requests: int = 0
    errors: int = 0
    latency: ExponentialHistogram = field(default_factory=ExponentialHistogram)
    outputs: dict[str, Moments] = field(default_factory=dict)
    similarity: list[int] | None = None
    shadow_compared: int = 0
    shadow_agreed: float = 0.0
    cpu_sum: float = 0.0
    cpu_max: float = 0.0
    ram_sum: float = 0.0
    ram_max: float = 0.0
    devices: DistinctCounter = field(default_factory=DistinctCounter)

    def add(self, obs: Observation) -> None:
        """Fold one window in."""
        self.windows += 1
        self.requests += obs.requests
        self.errors += obs.errors
        latency = obs.latency
        self.latency.merge_buckets(latency.scale, latency.zero_count, latency.offset, latency.counts)
        for name, m in obs.outputs.items():
            mine = self.outputs.get(name)
            theirs = m if isinstance(m, Moments) else Moments(m.count, m.mean, m.variance)
            self.outputs[name] = theirs if mine is None else mine.merge(theirs)
        if obs.similarity is not None:
            self._add_similarity(obs.similarity)
        self.shadow_compared += obs.shadow_compared
        self.shadow_agreed += obs.shadow_agreed
        self.cpu_sum += obs.cpu_percent
        self.cpu_max = max(self.cpu_max, obs.cpu_percent)
        self.ram_sum += obs.ram_mb
        self.ram_max = max(self.ram_max, obs.ram_mb)
        self.devices.add(obs.device_id)

    def merge(self, other: Aggregate) -> None:
        """Add `other` into this one: the aggregate of both sets of windows."""
        self.windows += other.windows
        self.requests += other.requests
        self.errors += other.errors
        self.latency.merge(other.latency)
        for name, moments in other.outputs.items():
            mine = self.outputs.get(name)
            self.outputs[name] = moments if mine is None else mine.merge(moments)
        if other.similarity is not None:
            self._add_similarity(other.similarity)
        self.shadow_compared += other.shadow_compared
        self.shadow_agreed += other.shadow_agreed
        self.cpu_sum += other.cpu_sum
        self.cpu_max = max(self.cpu_max, other.cpu_max)
        self.ram_sum += other.ram_sum
        self.ram_max = max(self.ram_max, other.ram_max)
        self.devices.merge(other.devices)

    def _add_similarity(self, counts: list[int] | tuple[int, ...]) -> None:
        if self.similarity is None:
            self.similarity = [0] * (len(SIMILARITY_BOUNDS) + 1)
        for i, n in enumerate(counts):
            self.similarity[i] += n

    # --- reading -------------------------------------------------------------------------------

    def stats(self, cohort: Cohort, since: datetime, until: datetime) -> CohortStats:
        """The aggregate as the contract shows it."""
        has_requests = self.requests > 0 and self.latency.count > 0
        return CohortStats(
            cohort=cohort,
            since=since,
            until=until,
            windows=self.windows,
            devices=self.devices.estimate(),
            requests=self.requests,
            errors=self.errors,
            error_rate=self.errors / self.requests if self.requests else None,
            latency_p50_ms=self.latency.quantile(0.50) if has_requests else None,
            latency_p95_ms=self.latency.quantile(0.95) if has_requests else None,
            latency_p99_ms=self.latency.quantile(0.99) if has_requests else None,
            latency_relative_error=relative_error(self.latency.scale) if has_requests else None,
            outputs={
                name: OutputSummary(count=m.count, mean=m.mean, std=m.variance**0.5) for name, m in self.outputs.items()
            },
            shadow_compared=self.shadow_compared,
            shadow_agreement=min(1.0, self.shadow_agreed / self.shadow_compared) if self.shadow_compared else None,
            cpu_percent_mean=self.cpu_sum / self.windows if self.windows else None,
            cpu_percent_max=self.cpu_max if self.windows else None,
            ram_mb_mean=self.ram_sum / self.windows if self.windows else None,
            ram_mb_max=self.ram_max if self.windows else None,
        )

    # --- stored form ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A compact, JSON-ready form (fold records and snapshots)."""
        return {
            "w": self.windows,
            "r": self.requests,
            "e": self.errors,
            "lat": [self.latency.scale, self.latency.zero_count, self.latency.offset, self.latency.counts],
            "out": {name: [m.count, m.mean, m.variance] for name, m in self.outputs.items()},
            "sim": self.similarity,
            "sh": [self.shadow_compared, self.shadow_agreed],
            "cpu": [self.cpu_sum, self.cpu_max],
            "ram": [self.ram_sum, self.ram_max],
            "dev": _devices_json(self.devices),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Aggregate:
        scale, zero_count, offset, counts = doc["lat"]
        return cls(
            windows=doc["w"],
            requests=doc["r"],
            errors=doc["e"],
            latency=ExponentialHistogram(scale=scale, zero_count=zero_count, offset=offset, counts=list(counts)),
            outputs={name: Moments(count=n, mean=mean, variance=var) for name, (n, mean, var) in doc["out"].items()},
            similarity=list(doc["sim"]) if doc["sim"] is not None else None,
            shadow_compared=doc["sh"][0],
            shadow_agreed=doc["sh"][1],
            cpu_sum=doc["cpu"][0],
            cpu_max=doc["cpu"][1],
            ram_sum=doc["ram"][0],
            ram_max=doc["ram"][1],
            devices=_devices_of(doc["dev"]),
        )


# Under this many non-empty registers the sparse form is the smaller one.
_SPARSE_REGISTERS = 128


def _devices_json(devices: DistinctCounter) -> dict[str, Any] | str | list[list[int]]:
    """Few devices as their hashes (the count stays exact); more as `[index, rank]` pairs of the
    non-empty registers, or base64 of all of them when that is smaller."""
    hashes = devices.exact_hashes()
    if hashes is not None:
        return {"exact": hashes}
    pairs = devices.to_sparse()
    return pairs if len(pairs) < _SPARSE_REGISTERS else base64.b64encode(devices.to_bytes()).decode()


def _devices_of(doc: dict[str, Any] | str | list[list[int]]) -> DistinctCounter:
    if isinstance(doc, dict):
        return DistinctCounter.from_hashes(doc["exact"])
    if isinstance(doc, str):
        return DistinctCounter.from_bytes(base64.b64decode(doc))
    return DistinctCounter.from_sparse(doc)
