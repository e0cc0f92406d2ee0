"""Judging a gate: a pure function of the wave's aggregate, the baseline's, and the gate.

    under min_samples (the wave's, or the baseline's when compared)  -> Inconclusive
    compared, but no baseline cohort reported                        -> Inconclusive
    ratio against a baseline of 0                                    -> Inconclusive
    threshold / difference / ratio                                   -> observed <comparator> threshold
    mann_whitney                                                     -> statistics.non_inferior

Every answer carries the numbers it was decided on and a sentence saying why.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from services.telemetry.aggregates import Aggregate
from services.telemetry.statistics import compare_latency, non_inferior
from shared.messages.rollout import LATENCY_METRICS, Gate
from shared.messages.telemetry import GateEvaluation

COMPARATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
QUANTILES = {"latency_p50_ms": 0.50, "latency_p95_ms": 0.95, "latency_p99_ms": 0.99}


def metric_value(aggregate: Aggregate, metric: str) -> tuple[float | None, int]:
    """The metric over an aggregate, and the samples it rests on (requests; compared requests for
    shadow agreement; values for an output statistic). None when there is nothing to read."""
    if metric == "error_rate":
        return (aggregate.errors / aggregate.requests if aggregate.requests else None), aggregate.requests
    if metric in QUANTILES:
        count = aggregate.latency.count
        return (aggregate.latency.quantile(QUANTILES[metric]) if count else None), count
    if metric == "shadow_agreement":
        compared = aggregate.shadow_compared
        return (min(1.0, aggregate.shadow_agreed / compared) if compared else None), compared
    if metric == "cpu_percent":
        return (aggregate.cpu_sum / aggregate.windows if aggregate.windows else None), aggregate.requests
    if metric == "ram_mb":
        return (aggregate.ram_sum / aggregate.windows if aggregate.windows else None), aggregate.requests
    if metric.startswith("output."):
        moments = aggregate.outputs.get(metric.removeprefix("output."))
        return (moments.mean if moments and moments.count else None), (moments.count if moments else 0)
    raise ValueError(f"unknown gate metric {metric!r}")


def judge(gate: Gate, wave: Aggregate, baseline: Aggregate | None) -> GateEvaluation:
    """The verdict of `gate` on the wave's aggregate (and the baseline's, when it compares)."""
    wave_value, samples = metric_value(wave, gate.metric)
    method = gate.compare_to_baseline or "threshold"
    base_value, base_samples = metric_value(baseline, gate.metric) if baseline is not None else (None, 0)
    compared = gate.compare_to_baseline is not None
    common: dict[str, Any] = {
        "method": method,
        "wave_value": wave_value,
        "baseline": base_value if compared else None,
        "samples": samples,
        "baseline_samples": base_samples if compared else None,
        "min_samples": gate.min_samples,
        "devices": wave.devices.estimate(),
        "baseline_devices": baseline.devices.estimate() if compared and baseline is not None else None,
    }

    def inconclusive(reason: str) -> GateEvaluation:
        return GateEvaluation(verdict="Inconclusive", observed=None, reason=reason, **common)

    if wave_value is None or samples < gate.min_samples:
        return inconclusive(f"the wave has {samples} samples of {gate.metric}, under min_samples ({gate.min_samples})")
    if not compared:
        passed = COMPARATORS[gate.comparator](wave_value, gate.threshold)
        return _decided(passed, wave_value, gate, f"{gate.metric} is {wave_value:.6g}", common)
    if baseline is None or base_value is None:
        return inconclusive(
            f"no baseline: no device of the wave's classes on the previous model reported {gate.metric}"
        )
    if base_samples < gate.min_samples:
        return inconclusive(
            f"the baseline has {base_samples} samples of {gate.metric}, under min_samples ({gate.min_samples})"
        )
    if method == "mann_whitney":
        return _mann_whitney(gate, wave, baseline, common)
    if method == "ratio":
        if base_value == 0:
            return inconclusive(f"the baseline's {gate.metric} is 0: a ratio to it means nothing (use difference)")
        observed = wave_value / base_value
        what = f"{gate.metric} is {observed:.4g} times the baseline's ({wave_value:.6g} against {base_value:.6g})"
    else:
        observed = wave_value - base_value
        what = f"{gate.metric} is {observed:+.6g} from the baseline's ({wave_value:.6g} against {base_value:.6g})"
    return _decided(COMPARATORS[gate.comparator](observed, gate.threshold), observed, gate, what, common)


def _decided(passed: bool, observed: float, gate: Gate, what: str, common: dict[str, Any]) -> GateEvaluation:
    holds = "within" if passed else "beyond"
    return GateEvaluation(
        verdict="Successful" if passed else "Failed",
        observed=observed,
        reason=f"{what}: {holds} {gate.comparator} {gate.threshold:g}",
        **common,
    )


def _mann_whitney(gate: Gate, wave: Aggregate, baseline: Aggregate, common: dict[str, Any]) -> GateEvaluation:
    assert gate.metric in LATENCY_METRICS
    comparison = compare_latency(wave.latency, baseline.latency, confidence=gate.confidence)
    verdict = non_inferior(comparison, margin_ratio=gate.threshold)
    interval = f"[{comparison.ratio_low:.4g}, {comparison.ratio_high:.4g}]"
    says = {
        "Successful": f"not slower than the baseline by more than x{gate.threshold:g}",
        "Failed": f"slower than the baseline by more than x{gate.threshold:g}",
        "Inconclusive": f"cannot tell whether it is within x{gate.threshold:g} of the baseline",
    }[verdict]
    return GateEvaluation(
        verdict=verdict,
        observed=_finite(comparison.ratio),
        low=_finite(comparison.ratio_low),
        high=_finite(comparison.ratio_high),
        p_value=comparison.p_wave_slower,
        reason=(
            f"latency is x{comparison.ratio:.4g} the baseline's (Hodges-Lehmann; {gate.confidence:.0%} interval "
            f"{interval}, p = {comparison.p_wave_slower:.3g} that the wave is slower): {says}"
        ),
        **common,
    )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
