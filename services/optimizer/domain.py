"""The optimizer's rules, free of I/O: budgets, the Pareto front, which candidate wins, requirements.

A budget check compares what was measured on the optimizer host with what the device allows:
latency is scaled by the device class's `speed_factor` first, so one measurement serves every
profile. Every miss is reported with its gap, because "no candidate fits" is only useful when it
says by how much.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from services.optimizer.evaluation import Measurement
from shared.messages.optimizer import BudgetMiss, Budgets, Candidate, CandidateMetrics, DeviceProfile
from shared.messages.registry import Requirements

# The first onnxruntime release that runs each contrib operator on the CPU; anything without
# contrib ops needs no more than the floor.
ORT_FLOOR = "1.16"
CONTRIB_OP_MIN_ORT: dict[str, str] = {
    "com.microsoft.DynamicQuantizeMatMul": "1.16",
    "com.microsoft.MatMulIntegerToFloat": "1.16",
    "com.microsoft.QGemm": "1.16",
    "com.microsoft.MatMulNBits": "1.17",
    "com.microsoft.GatherBlockQuantized": "1.20",
}
RUNTIME_OVERHEAD_MB = 64


def check_budgets(m: Measurement, budgets: Budgets, *, speed_factor: float) -> list[str]:
    """One line per budget `m` misses, naming the budget, the value, the limit and the gap."""
    failures = []
    if budgets.max_size_bytes is not None and m.size_bytes > budgets.max_size_bytes:
        gap = m.size_bytes - budgets.max_size_bytes
        failures.append(f"max_size_bytes: {m.size_bytes:,} > {budgets.max_size_bytes:,} (over by {gap:,} bytes)")
    if budgets.max_p95_latency_ms is not None:
        device_p95 = m.latency_p95_ms * speed_factor
        if device_p95 > budgets.max_p95_latency_ms:
            failures.append(
                f"max_p95_latency_ms: {device_p95:.2f} ms on the device (host {m.latency_p95_ms:.2f} ms x "
                f"{speed_factor:g}) > {budgets.max_p95_latency_ms:g} ms "
                f"(over by {device_p95 - budgets.max_p95_latency_ms:.2f} ms)"
            )
    for metric, minimum in budgets.min_fidelity.items():
        value = m.fidelity.get(metric)
        if value is None:
            failures.append(f"min_fidelity.{metric}: not measured for this model's outputs")
        elif value < minimum:
            failures.append(f"min_fidelity.{metric}: {value:.4f} < {minimum:g} (short by {minimum - value:.4f})")
    if budgets.max_kl is not None:
        kl = m.fidelity.get("kl")
        if kl is None:
            failures.append("max_kl: not measured (the model's outputs are not logits)")
        elif kl > budgets.max_kl:
            failures.append(f"max_kl: {kl:.5f} > {budgets.max_kl:g} (over by {kl - budgets.max_kl:.5f})")
    return failures


def to_metrics(m: Measurement, profile: DeviceProfile) -> CandidateMetrics:
    failures = check_budgets(m, profile.budgets, speed_factor=profile.speed_factor)
    return CandidateMetrics(
        size_bytes=m.size_bytes,
        compressed_size_bytes=m.compressed_size_bytes,
        latency_p50_ms=m.latency_p50_ms,
        latency_p95_ms=m.latency_p95_ms,
        threads=m.threads,
        fidelity=m.fidelity,
        meets_budget=not failures,
        failures=failures,
    )


def _objectives(m: CandidateMetrics) -> tuple[float, float, float]:
    """Smaller is better on every axis: size, p95 latency, and fidelity lost."""
    fidelity = m.fidelity.get("cosine_mean", m.fidelity.get("top1_agreement", 0.0))
    return (float(m.size_bytes), m.latency_p95_ms, 1.0 - fidelity)


def mark_pareto(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Flag candidates no other candidate beats on size, p95 latency and fidelity at once."""
    scored = {id(c): _objectives(c.metrics) for c in candidates if c.metrics is not None}

    def dominated(mine: tuple[float, float, float]) -> bool:
        return any(o != mine and all(a <= b for a, b in zip(o, mine, strict=True)) for o in scored.values())

    return [
        c if id(c) not in scored else c.model_copy(update={"pareto": not dominated(scored[id(c)])}) for c in candidates
    ]


def choose(candidates: Sequence[Candidate]) -> Candidate | None:
    """The best candidate that meets every budget: the smallest, then the fastest, then the most faithful.

    Why size first: on edge devices the download and the memory footprint are the scarce
    resources once latency and fidelity are within budget; the budgets already guard the rest.
    """
    fitting = [(c, c.metrics) for c in candidates if c.metrics is not None and c.metrics.meets_budget]
    if not fitting:
        return None
    return min(fitting, key=lambda cm: _objectives(cm[1]))[0]


def budget_misses(candidates: Sequence[Candidate], profile: DeviceProfile) -> list[BudgetMiss]:
    """For each budget no candidate met, the closest any candidate came and the gap."""
    measured = [(c.recipe.name, c.metrics) for c in candidates if c.metrics is not None]
    b = profile.budgets
    axes: list[tuple[str, float | None, bool, str]] = [
        ("max_size_bytes", b.max_size_bytes, False, "size"),
        ("max_p95_latency_ms", b.max_p95_latency_ms, False, "latency"),
        ("max_kl", b.max_kl, False, "kl"),
    ] + [(f"min_fidelity.{k}", v, True, k) for k, v in b.min_fidelity.items()]
    misses = []
    for budget, limit, higher_is_better, axis in axes:
        if limit is None:
            continue
        values = []
        for recipe, metrics in measured:
            value = _axis(metrics, axis, profile.speed_factor)
            if value is not None:
                values.append((value, recipe))
        if not values:
            continue
        best, who = max(values) if higher_is_better else min(values)
        met = best >= limit if higher_is_better else best <= limit
        if not met:
            misses.append(BudgetMiss(budget=budget, limit=limit, best=best, best_candidate=who, gap=abs(best - limit)))
    return misses


def _axis(m: CandidateMetrics, axis: str, speed_factor: float) -> float | None:
    if axis == "size":
        return float(m.size_bytes)
    if axis == "latency":
        return m.latency_p95_ms * speed_factor
    return m.fidelity.get(axis)


def requirements_for(*, contrib_ops: Sequence[str], opset: int | None, size_bytes: int) -> Requirements:
    """What a device needs to run a variant: the newest runtime any of its operators needs, and an
    estimate of memory (weights loaded once, plus a copy during session creation, plus runtime)."""
    versions = [CONTRIB_OP_MIN_ORT.get(op, ORT_FLOOR) for op in contrib_ops] + [ORT_FLOOR]
    min_ort = max(versions, key=lambda v: tuple(int(p) for p in v.split(".")))
    ram_mb = math.ceil(2 * size_bytes / 1024**2) + RUNTIME_OVERHEAD_MB
    return Requirements(min_onnxruntime=min_ort, opset=opset, contrib_ops=sorted(contrib_ops), min_ram_mb=ram_mb)
