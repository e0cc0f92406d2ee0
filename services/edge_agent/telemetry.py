"""Telemetry windows (schema 2): what a device observed about its model, as aggregates only.

Every request adds its latency to an exponential histogram (`shared.histogram`, scale 4: any
quantile read from it is within 2.2 % of the exact one, which a "p95 +10 %" gate needs) and its
first output to running moments that keep their counts (`Moments`), so the telemetry service can
merge windows with the right weights. At the end of a window the recorder turns those into a
`TelemetryWindow` and the agent starts another.

Similarity is the drift statistic of embedding models: an L2-normalised embedding's norm never
moves, its direction does. The device keeps a reference direction per digest (`ReferenceCentroid`:
the mean of the first `REFERENCE_REQUESTS` normalised outputs it served) that outlives windows, so
the agent holds it and hands it to each recorder; once it is complete, every served request's
cosine to it is counted into `SIMILARITY_BOUNDS` bins. The centroid and the outputs never leave the
device: only counts and moments do. The same recorder serves the real agent and the fleet
simulator's real-inference devices, so their telemetry is shaped identically.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from shared.histogram import ExponentialHistogram
from shared.messages.device import (
    SIMILARITY_BOUNDS,
    ExponentialLatency,
    ShadowAgreement,
    SimilarityHistogram,
    TelemetryWindow,
)
from shared.output_statistics import Moments, output_moments, wire_outputs

LATENCY_SCALE = 4  # base 2^(1/16): 2.2 % bound; the histogram downscales itself to fit 160 buckets
REFERENCE_REQUESTS = 64  # served outputs averaged into a digest's reference centroid
# After switching to a new model, its first window closes this soon (or at the window's length, if
# shorter): a rollout counts a device healthy once a window on the new model arrives, and should
# hear within a second, not within a whole window (10 s by default, 30 s in the simulator).
FIRST_WINDOW_SECONDS = 1.0


def similarity_bin(similarity: float) -> int:
    """The `SIMILARITY_BOUNDS` bin of one cosine: `i` for `(b[i-1], b[i]]`, 0 at or under the first
    bound, `len(bounds)` over the last (the contract's rule; `numpy.searchsorted(side="left")`)."""
    return bisect.bisect_left(SIMILARITY_BOUNDS, similarity)


def embedding_row(output: np.ndarray) -> np.ndarray | None:
    """The row a request's similarity is computed on: the first row of a floating output shaped
    `[batch, dim]` (or `[dim]`) with dim >= 2; None for anything else (token-level or integer
    outputs have no single direction to compare).

    One row per request, not every row of a batch: the contract counts similarities per served
    request (`SimilarityHistogram`), and the first row is a fair sample of a batch's rows.
    """
    if not np.issubdtype(output.dtype, np.floating) or output.ndim not in (1, 2) or output.size == 0:
        return None
    row = output if output.ndim == 1 else output[0]
    return row.astype(np.float64) if row.size >= 2 else None


@dataclass
class ReferenceCentroid:
    """A device's reference direction for one digest: the mean of the first `size` L2-normalised
    output rows it served for it, then normalised.

    It outlives windows (the agent keeps one per digest and hands it to each recorder), so a
    window's similarities are all against the same reference, wherever the window boundaries fall.
    Not thread-safe: the agent calls it under its recorder lock.
    """

    size: int = REFERENCE_REQUESTS
    seen: int = 0
    _sum: np.ndarray | None = field(default=None, repr=False)
    _unit: np.ndarray | None = field(default=None, repr=False)

    @property
    def complete(self) -> bool:
        return self.seen >= self.size

    def observe(self, row: np.ndarray) -> float | None:
        """Feed one served output row (float64): while the reference is being built the row joins it
        (None); once it is complete, the row's cosine similarity to it. Rows that have no direction
        (zero or non-finite norm) or another dimension are skipped (None)."""
        norm = float(np.linalg.norm(row))
        if not math.isfinite(norm) or norm == 0.0:
            return None
        unit = row / norm
        if self._sum is None:
            self._sum = np.zeros_like(unit)
        if unit.shape != self._sum.shape:
            return None
        if not self.complete:
            self._sum += unit
            self.seen += 1
            if self.complete:
                centroid = self._sum / self.seen
                length = float(np.linalg.norm(centroid))
                self._unit = centroid / length if length > 0 else None  # outputs cancelling out: no direction
            return None
        if self._unit is None:
            return None
        return float(np.clip(unit @ self._unit, -1.0, 1.0))


@dataclass
class WindowRecorder:
    """Accumulates one window of requests for one model digest.

    Attributes:
        digest: the model served.
        started: the window's start.
        rollout_id: the rollout of the desired state that made this model serve (None: by hand).
        wave: that desired state's wave (None with `rollout_id`).
        reference: the device's reference centroid for `digest` (None: `record` keeps no similarity;
            the fleet simulator fills `similarity` from measured ones, against a reference of
            `REFERENCE_REQUESTS`).
    """

    digest: str
    started: datetime
    rollout_id: str | None = None
    wave: int | None = None
    reference: ReferenceCentroid | None = None
    latency: ExponentialHistogram = field(default_factory=lambda: ExponentialHistogram(scale=LATENCY_SCALE))
    requests: int = 0
    errors: int = 0
    norms: Moments = field(default_factory=Moments)
    values: Moments = field(default_factory=Moments)
    similarity: list[int] = field(default_factory=lambda: [0] * (len(SIMILARITY_BOUNDS) + 1))
    shadow_previous: str | None = None
    shadow_compared: int = 0
    shadow_agreed: int = 0

    def record(self, latency_ms: float, *, output: np.ndarray | None = None, error: bool = False) -> None:
        """One request: its latency, and its first output unless it failed."""
        self.requests += 1
        self.latency.record(latency_ms)
        if error:
            self.errors += 1
            return
        if output is None:
            return
        norms, values = output_moments(output)
        self.norms.merge(norms)
        self.values.merge(values)
        row = embedding_row(output)
        if self.reference is not None and row is not None:
            similarity = self.reference.observe(row)
            if similarity is not None:
                self.similarity[similarity_bin(similarity)] += 1

    def record_shadow(self, *, previous_digest: str, agreed: bool) -> None:
        """The previous model ran on the same input; did it agree with the new one?"""
        self.shadow_previous = previous_digest
        self.shadow_compared += 1
        self.shadow_agreed += int(agreed)

    def close(
        self, *, device_id: str, device_class: str, ended: datetime, cpu_percent: float, ram_mb: float
    ) -> TelemetryWindow:
        """The window's message (the recorder is not reused afterwards)."""
        outputs = wire_outputs(self.norms, self.values)
        shadow = None
        if self.shadow_previous and self.shadow_compared:
            shadow = ShadowAgreement(
                previous_digest=self.shadow_previous,
                compared=min(self.shadow_compared, self.requests),
                agreement_rate=self.shadow_agreed / self.shadow_compared,
            )
        similarity = None
        if any(self.similarity):  # None: the reference is still being built, or nothing was compared
            size = self.reference.size if self.reference is not None else REFERENCE_REQUESTS
            similarity = SimilarityHistogram(reference_requests=size, counts=list(self.similarity))
        both = self.rollout_id is not None and self.wave is not None  # the contract: both or neither
        return TelemetryWindow(
            device_id=device_id,
            device_class=device_class,
            model_digest=self.digest,
            rollout_id=self.rollout_id if both else None,
            wave=self.wave if both else None,
            window_start=self.started,
            window_end=ended,
            request_count=self.requests,
            error_count=self.errors,
            latency=ExponentialLatency.of(self.latency),
            outputs=outputs,
            similarity=similarity,
            shadow=shadow,
            cpu_percent=min(max(cpu_percent, 0.0), 100.0),
            ram_mb=max(ram_mb, 0.0),
        )


def embeddings_agree(a: np.ndarray, b: np.ndarray, *, min_cosine: float = 0.95) -> bool:
    """Shadow agreement for one request: cosine of the flattened outputs (top-1 for 2-class+ logits
    would be the other natural choice; embeddings are this platform's reference workload)."""
    x = a.astype(np.float64).ravel()
    y = b.astype(np.float64).ravel()
    denom = float(np.linalg.norm(x) * np.linalg.norm(y))
    return denom > 0 and float(x @ y) / denom >= min_cosine
