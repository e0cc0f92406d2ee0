"""What a model's outputs look like, as moments: the one definition devices and the registry share.

A device summarises the first output of every request it serves into two statistics, and the
registry summarises a model's outputs on its evaluation set into the same two, so the telemetry
service can hold a fleet's outputs against what the model produced on the data it was validated on
(`services/telemetry/drift.py`):

    norm   the L2 norm of each output row (a row: one batch entry, flattened)
    value  every element of every output row

Rows holding NaN or infinity are left out of both (they would make every moment non-finite).
Counts travel with the moments (`OutputMoments`), so windows and evaluation rows merge by count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from shared.messages.device import OutputMoments


@dataclass
class Moments:
    """Count, mean and sum of squared deviations (`m2`) of a stream of values.

    Kept as (count, mean, m2) and merged by Chan's parallel rule rather than as sums of squares:
    an embedding's norms are ~1.0 with a variance of ~1e-12, which `E[x²] - E[x]²` would lose to
    rounding.
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, values: np.ndarray) -> None:
        """Add every value of `values`."""
        if values.size:
            mean = float(values.mean())
            self.merge(Moments(count=int(values.size), mean=mean, m2=float(np.square(values - mean).sum())))

    def merge(self, other: Moments) -> None:
        """Add the values `other` summarises."""
        if other.count == 0:
            return
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean += delta * other.count / total
        self.m2 += other.m2 + delta * delta * self.count * other.count / total
        self.count = total

    @classmethod
    def of_groups(cls, groups: np.ndarray) -> Moments:
        """The moments of the union of groups given as rows of (count, mean, m2), in one pass."""
        if not groups.size:
            return cls()
        n, means = groups[:, 0], groups[:, 1]
        total = float(n.sum())
        if total == 0:
            return cls()
        mean = float(n @ means) / total
        deviation = means - mean
        return cls(count=int(total), mean=mean, m2=float(groups[:, 2].sum() + n @ (deviation * deviation)))

    @property
    def variance(self) -> float:
        """The population variance (clamped at 0 against rounding)."""
        return max(self.m2 / self.count, 0.0) if self.count else 0.0

    def wire(self) -> OutputMoments | None:
        """The contract's form; None with no values (or values too large to square)."""
        if self.count == 0 or not (math.isfinite(self.mean) and math.isfinite(self.variance)):
            return None
        return OutputMoments(count=self.count, mean=self.mean, variance=self.variance)


def finite_rows(output: np.ndarray) -> np.ndarray:
    """The output as float64 rows (one per batch entry), without rows holding NaN or infinity (which
    would make every moment of the window non-finite, and the window invalid)."""
    rows = output.reshape(output.shape[0], -1) if output.ndim > 1 else output.reshape(1, -1)
    rows = rows.astype(np.float64)
    finite: np.ndarray = rows[np.isfinite(rows).all(axis=1)]
    return finite


def output_moments(output: np.ndarray) -> tuple[Moments, Moments]:
    """The (norm, value) moments of one output (see the module docstring)."""
    rows = finite_rows(output)
    norms, values = Moments(), Moments()
    norms.add(np.linalg.norm(rows, axis=1))
    values.add(rows)
    return norms, values


def wire_outputs(norms: Moments, values: Moments) -> dict[str, OutputMoments]:
    """The contract's `outputs` map (`TelemetryWindow.outputs`, `EvalOutputs.outputs`): the
    statistics that hold values, by name."""
    named = (("norm", norms.wire()), ("value", values.wire()))
    return {name: moments for name, moments in named if moments is not None}
