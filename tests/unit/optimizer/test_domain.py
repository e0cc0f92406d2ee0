"""Budgets, the Pareto front, the choice and requirements: the optimizer's pure rules."""

from __future__ import annotations

import pytest

from services.optimizer import domain
from services.optimizer.evaluation import Measurement
from shared.messages.optimizer import Budgets, Candidate, DeviceProfile, PassSpec, Recipe

MB = 1_000_000


def recipe(name: str) -> Recipe:
    return Recipe(name=name, passes=[PassSpec(type="OnnxDynamicQuantization")])


def profile(**budgets: object) -> DeviceProfile:
    return DeviceProfile(
        name="rpi5",
        device_class="rpi5",
        speed_factor=4.0,
        budgets=Budgets(**budgets),
        recipes=[recipe("a")],
    )


def measured(size: int, p95: float, cos: float, *, cos_min: float | None = None) -> Measurement:
    return Measurement(
        size_bytes=size,
        compressed_size_bytes=size // 2,
        latency_p50_ms=p95 * 0.8,
        latency_p95_ms=p95,
        threads=1,
        latency_samples=10,
        fidelity={"cosine_mean": cos, "cosine_min": cos if cos_min is None else cos_min},
    )


def candidate(name: str, m: Measurement, p: DeviceProfile) -> Candidate:
    return Candidate(recipe=recipe(name), metrics=domain.to_metrics(m, p))


def test_latency_budget_is_checked_on_the_device_after_scaling() -> None:
    p = profile(max_p95_latency_ms=20.0)
    assert domain.check_budgets(measured(1, 4.9, 1.0), p.budgets, speed_factor=4.0) == []
    (failure,) = domain.check_budgets(measured(1, 5.5, 1.0), p.budgets, speed_factor=4.0)
    assert "22.00 ms on the device" in failure and "over by 2.00 ms" in failure


def test_every_miss_names_the_budget_and_the_gap() -> None:
    p = profile(max_size_bytes=25 * MB, min_fidelity={"cosine_mean": 0.99, "top1_agreement": 0.9}, max_kl=0.1)
    failures = domain.check_budgets(measured(30 * MB, 1.0, 0.98), p.budgets, speed_factor=1.0)
    assert any(f.startswith("max_size_bytes") and "over by 5,000,000 bytes" in f for f in failures)
    assert any(f.startswith("min_fidelity.cosine_mean") and "short by 0.0100" in f for f in failures)
    assert any("min_fidelity.top1_agreement: not measured" in f for f in failures)
    assert any(f.startswith("max_kl: not measured") for f in failures)


def test_choice_is_the_smallest_candidate_within_budget() -> None:
    p = profile(max_size_bytes=30 * MB, min_fidelity={"cosine_mean": 0.99})
    cands = [
        candidate("big", measured(28 * MB, 2.0, 0.999), p),
        candidate("small", measured(20 * MB, 3.0, 0.995), p),
        candidate("tiny-but-bad", measured(10 * MB, 1.0, 0.97), p),
        Candidate(recipe=recipe("broken"), error="unsupported op"),
    ]
    chosen = domain.choose(cands)
    assert chosen is not None and chosen.recipe.name == "small"
    marked = {c.recipe.name: c.pareto for c in domain.mark_pareto(cands)}
    assert marked == {"big": True, "small": True, "tiny-but-bad": True, "broken": False}


def test_dominated_candidates_leave_the_pareto_front() -> None:
    p = profile()
    cands = [candidate("good", measured(10, 1.0, 0.99), p), candidate("worse", measured(20, 2.0, 0.98), p)]
    assert [c.pareto for c in domain.mark_pareto(cands)] == [True, False]


def test_misses_report_the_closest_candidate_per_budget() -> None:
    p = profile(max_size_bytes=5 * MB, min_fidelity={"cosine_mean": 0.999})
    cands = [candidate("a", measured(8 * MB, 1.0, 0.99), p), candidate("b", measured(6 * MB, 1.0, 0.995), p)]
    assert domain.choose(cands) is None
    misses = {m.budget: m for m in domain.budget_misses(cands, p)}
    assert misses["max_size_bytes"].best_candidate == "b" and misses["max_size_bytes"].gap == pytest.approx(1 * MB)
    assert misses["min_fidelity.cosine_mean"].best == pytest.approx(0.995)


def test_requirements_follow_the_contrib_ops() -> None:
    plain = domain.requirements_for(contrib_ops=[], opset=17, size_bytes=10 * 1024**2)
    assert plain.min_onnxruntime == domain.ORT_FLOOR and plain.min_ram_mb == 20 + domain.RUNTIME_OVERHEAD_MB
    int4 = domain.requirements_for(
        contrib_ops=["com.microsoft.MatMulNBits", "com.microsoft.GatherBlockQuantized"], opset=17, size_bytes=1
    )
    assert int4.min_onnxruntime == "1.20" and int4.contrib_ops[0] == "com.microsoft.GatherBlockQuantized"
