"""Drift: a digest's recent aggregates against its reference, scored on aggregates only.

The reference of a digest is the merge of its first `reference_periods` closed periods once they
hold `min_requests` requests (the model as it behaved when it went live). Each later closed period
is scored against it, per statistic:

    output.similarity  PSI of the binned cosine similarity to each device's reference centroid
                       (embedding models: it falls when inputs shift; an embedding's norm does not)
    latency            PSI of the latency distribution on fixed bins (`LATENCY_EDGES`)
    output.<stat>      standardized shift of the mean (an effect size, in reference stds); against
                       the model's outputs on its evaluation set where the registry measured them
                       (`EvalOutputs`), from the digest's first period on, since that is the data
                       the model was validated on and needs no warm-up of the fleet's own

PSI's threshold is Evidently's (0.1); a period with fewer than `min_requests` requests is not
scored (Evidently, too, refuses to judge tiny samples). Debounced: a statistic drifts when its last
`debounce` periods all breach and the one before did not, so one bad period is no event and a long
episode is one event, not one per period. Everything here is a pure function of aggregates, so
every instance, and a restarted one, reaches the same events with the same ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from services.telemetry.aggregates import Aggregate
from services.telemetry.statistics import PSI_THRESHOLD, Moments, histogram_bins, psi, standardized_shift
from shared.messages.device import SIMILARITY_BOUNDS

# A shift of half the reference's standard deviation: a "medium" effect (Cohen), well over the
# wobble of a stable fleet's means, well under what a real input shift does to them.
Source = Literal["first_periods", "eval_set"]  # where a score's reference came from

SHIFT_THRESHOLD = 0.5
MIN_REQUESTS = 500
DEBOUNCE_PERIODS = 2
# Fixed latency bins (ms) for PSI: fine where edge models answer, coarse beyond.
LATENCY_EDGES: tuple[float, ...] = (1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 250, 500, 1000)


@dataclass(frozen=True, kw_only=True)
class Score:
    """One statistic of one period against the reference."""

    metric: str
    method: str
    reference: float
    current: float
    score: float
    threshold: float
    source: Source = "first_periods"

    @property
    def breached(self) -> bool:
        return self.score >= self.threshold


def reference_of(periods: Sequence[Aggregate], *, reference_periods: int, min_requests: int) -> Aggregate | None:
    """The reference from a digest's first closed periods, oldest first; None until there are
    `reference_periods` of them with `min_requests` requests in all."""
    if len(periods) < reference_periods:
        return None
    reference = Aggregate()
    for period in periods[:reference_periods]:
        reference.merge(period)
    return reference if reference.requests >= min_requests else None


def scores(
    reference: Aggregate | None,
    current: Aggregate,
    *,
    eval_outputs: Mapping[str, Moments] | None = None,
    min_requests: int = MIN_REQUESTS,
) -> list[Score]:
    """Every statistic of `current` scored against its reference (none under `min_requests`).

    Output statistics are held against `eval_outputs` when the registry measured the digest on its
    evaluation set (the data the model was validated on: `EvalOutputs`), else against `reference`'s
    outputs. Latency and similarity only ever against `reference`, the fleet's own first periods:
    the registry's host is no device, and a device's similarity is to its own centroid.
    """
    if current.requests < min_requests:
        return []
    out = _behaviour_scores(reference, current) if reference is not None else []
    if eval_outputs is not None:
        out += _output_scores(eval_outputs, current, source="eval_set")
    elif reference is not None:
        out += _output_scores(reference.outputs, current, source="first_periods")
    return out


def _behaviour_scores(reference: Aggregate, current: Aggregate) -> list[Score]:
    if current.latency.count == 0 or reference.latency.count == 0:
        return []
    out = [
        Score(
            metric="latency",
            method="psi",
            reference=reference.latency.quantile(0.95),
            current=current.latency.quantile(0.95),
            score=psi(histogram_bins(reference.latency, LATENCY_EDGES), histogram_bins(current.latency, LATENCY_EDGES)),
            threshold=PSI_THRESHOLD,
        )
    ]
    if reference.similarity and current.similarity and sum(reference.similarity) and sum(current.similarity):
        out.append(
            Score(
                metric="output.similarity",
                method="psi",
                reference=mean_similarity(reference.similarity),
                current=mean_similarity(current.similarity),
                score=psi(reference.similarity, current.similarity),
                threshold=PSI_THRESHOLD,
            )
        )
    return out


def _output_scores(reference: Mapping[str, Moments], current: Aggregate, *, source: Source) -> list[Score]:
    out = []
    for name in sorted(set(reference) & set(current.outputs)):
        ref, cur = reference[name], current.outputs[name]
        if ref.count and cur.count:
            out.append(
                Score(
                    metric=f"output.{name}",
                    method="standardized_shift",
                    reference=ref.mean,
                    current=cur.mean,
                    score=standardized_shift(ref, cur),
                    threshold=SHIFT_THRESHOLD,
                    source=source,
                )
            )
    return out


def onsets(history: Sequence[Sequence[Score]], *, debounce: int = DEBOUNCE_PERIODS) -> list[Score]:
    """The statistics whose drift starts being reported with the last period of `history` (oldest
    first): breached in each of the last `debounce` periods, and not in the one before them."""
    if len(history) < debounce:
        return []
    recent = [{s.metric: s for s in period} for period in history[-debounce:]]
    before = {s.metric: s for s in history[-debounce - 1]} if len(history) > debounce else {}
    found = []
    for metric, score in recent[-1].items():
        if all(metric in p and p[metric].breached for p in recent) and not (
            metric in before and before[metric].breached
        ):
            found.append(score)
    return found


def mean_similarity(counts: Sequence[int]) -> float:
    """The mean similarity, estimated from bin middles (for the event's reader, not the score)."""
    edges = (-1.0, *SIMILARITY_BOUNDS, 1.0)
    middles = [(edges[i] + edges[i + 1]) / 2 for i in range(len(counts))]
    total = sum(counts)
    return sum(m * n for m, n in zip(middles, counts, strict=True)) / total if total else 0.0
