"""The search: run every recipe of a profile on the base model, measure each, pick the winner.

Building candidates runs with bounded concurrency (quantizers are mostly single-threaded numpy),
but measuring is serialised: two candidates timed at once on a 2-core host would each report the
other's load as their own latency. The base model's outputs are computed once and shared.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from services.optimizer import domain
from services.optimizer.errors import OptimizerError
from services.optimizer.evaluation import Measurement, evaluate, reference_outputs
from services.optimizer.passes.base import PassContext
from services.optimizer.recipes import run_recipe
from shared.messages.optimizer import Candidate, CandidateMetrics, DeviceProfile, Recipe

Stage = Literal["queued", "optimizing", "evaluating", "evaluated", "failed"]


@dataclass(frozen=True, kw_only=True)
class Progress:
    candidate: str
    stage: Stage
    completed: int
    total: int
    metrics: CandidateMetrics | None = None
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class Built:
    """A candidate that ran to the end: its file and the contrib operators it needs."""

    path: Path
    contrib_ops: list[str]


@dataclass(frozen=True, kw_only=True)
class SearchResult:
    candidates: list[Candidate]
    chosen: Candidate | None
    built: dict[str, Built] = field(default_factory=dict)
    base: Measurement | None = None


def run_search(
    *,
    base: Path,
    eval_set: dict[str, np.ndarray],
    profile: DeviceProfile,
    workdir: Path,
    threads: int = 1,
    concurrency: int = 2,
    on_progress: Callable[[Progress], None] = lambda _: None,
) -> SearchResult:
    """Try every recipe of `profile`; returns every candidate (Pareto-flagged) and the one chosen."""
    reference = reference_outputs(base, eval_set)
    base_measurement = evaluate(base, reference=reference, eval_set=eval_set, threads=threads)
    total = len(profile.recipes)
    done = 0
    lock = threading.Lock()  # guards `done` and serialises measurement
    built: dict[str, Built] = {}
    for recipe in profile.recipes:
        on_progress(Progress(candidate=recipe.name, stage="queued", completed=0, total=total))

    def attempt(recipe: Recipe) -> Candidate:
        nonlocal done
        on_progress(Progress(candidate=recipe.name, stage="optimizing", completed=done, total=total))
        recipe_dir = workdir / recipe.name
        recipe_dir.mkdir(parents=True, exist_ok=True)
        try:
            result = run_recipe(
                recipe, base, recipe_dir / "model.onnx", context=PassContext(eval_set=eval_set, workdir=recipe_dir)
            )
            with lock:
                on_progress(Progress(candidate=recipe.name, stage="evaluating", completed=done, total=total))
                measurement = evaluate(result.path, reference=reference, eval_set=eval_set, threads=threads)
                metrics = domain.to_metrics(measurement, profile)
                built[recipe.name] = Built(path=result.path, contrib_ops=sorted(result.contrib_ops))
                done += 1
                on_progress(
                    Progress(candidate=recipe.name, stage="evaluated", completed=done, total=total, metrics=metrics)
                )
            return Candidate(recipe=recipe, metrics=metrics)
        except OptimizerError as exc:
            with lock:
                done += 1
                on_progress(
                    Progress(candidate=recipe.name, stage="failed", completed=done, total=total, error=str(exc))
                )
            return Candidate(recipe=recipe, error=str(exc))

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="candidate") as pool:
        candidates = list(pool.map(attempt, profile.recipes))
    marked = domain.mark_pareto(candidates)
    return SearchResult(candidates=marked, chosen=domain.choose(marked), built=built, base=base_measurement)
