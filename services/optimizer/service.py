"""Optimizer use cases: resolve the profile → fetch the version and its eval set (each checked against
the registry's record, `fetch.py`) → search → register the winner as a variant with its lineage (and
check the registry recorded the bytes that were built) → the completed or failed event; and queueing
the auto-optimization commands a newly registered model gets (`auto.py`).

Nothing here knows FastStream. The search is CPU-bound and runs in a worker thread; its progress
is published from there through the event loop (the `progress` sink), in order, before the final
event, which the use case returns in its `Outcome`.

A redelivered command (after a crash) runs the search again: registering the same bytes again is a
no-op at the registry, and the final event's id is derived from the command id, so consumers see
one `optimization.completed` either way.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services.optimizer import auto, domain, profiles
from services.optimizer.errors import ArtifactMismatch, EvaluationError, OptimizerError, ProfileError, SourceNotFound
from services.optimizer.evaluation import Measurement
from services.optimizer.fetch import Expected, fetch_verified
from services.optimizer.ports import Blobs, Registry
from services.optimizer.search import Progress, SearchResult, run_search
from shared.artifacts import ArtifactNotFound, StoredObject
from shared.messages.common import ObjectRef
from shared.messages.envelope import deterministic_id
from shared.messages.optimizer import (
    Candidate,
    CandidateMetrics,
    DeviceProfile,
    ListProfiles,
    OptimizationCompleted,
    OptimizationFailed,
    OptimizationProgress,
    OptimizeModel,
    RegisteredVariant,
)
from shared.messages.registry import Artifact, EvalSet, ModelDetail, ModelRegistered, RegisterVariant
from shared.outcomes import Outcome

log = logging.getLogger(__name__)
ProgressSink = Callable[[OptimizationProgress, str], Coroutine[Any, Any, None]]


async def _no_progress(event: OptimizationProgress, event_id: str) -> None:
    return None


class OptimizerService:
    def __init__(
        self,
        *,
        registry: Registry,
        blobs: Blobs,
        profiles: dict[str, DeviceProfile],
        threads: int = 1,
        concurrency: int = 2,
        auto_profiles: Sequence[str] = (),
        progress: ProgressSink = _no_progress,
    ) -> None:
        self._registry = registry
        self._blobs = blobs
        self._profiles = profiles
        self._threads = threads
        self._concurrency = concurrency
        self._auto_profiles = tuple(auto_profiles)
        self._progress = progress

    async def optimize(self, cmd: OptimizeModel, *, command_id: str) -> Outcome:
        """Run one optimization request to its final event, announced with an id derived from the command.

        A failed search is still a handled command: its answer is the `optimization.failed` event.
        """
        final = await self.search(cmd, optimization_id=command_id)
        event_id = deterministic_id(final.TYPE, command_id)
        return Outcome(status="applied", events=[(final, event_id)], result={"event": final.TYPE})

    async def optimize_new_model(self, event: ModelRegistered, *, event_id: str) -> Outcome:
        """Queue the auto-optimization profiles' commands for a newly registered model."""
        commands = auto.optimize_requests(event.record, self._auto_profiles)
        if not commands:
            log.info("nothing to optimize automatically", extra={"model": event.record.name})
            return Outcome(status="unchanged")
        return Outcome(status="applied", commands=commands)

    async def list_profiles(self, request: ListProfiles) -> list[DeviceProfile]:
        """The profiles this optimizer knows, by name (what a blueprint's `profiles` may name)."""
        return [self._profiles[name] for name in sorted(self._profiles)]

    async def search(self, cmd: OptimizeModel, *, optimization_id: str) -> OptimizationCompleted | OptimizationFailed:
        """Run one optimization request to its final event (never raises for the caller's mistakes)."""
        ids = {"optimization_id": optimization_id, "name": cmd.name, "version": cmd.version}
        try:
            profile = profiles.resolve(cmd.profile, recipes=cmd.recipes, profiles=self._profiles)
        except ProfileError as exc:
            return OptimizationFailed(**ids, reason=str(exc))
        try:
            detail = await self._registry.get_model(cmd.name, cmd.version)
        except SourceNotFound as exc:
            return OptimizationFailed(**ids, reason=f"no such model version: {exc}", profile=profile)
        eval_set_ref = detail.version.eval_set
        if eval_set_ref is None:
            return OptimizationFailed(
                **ids,
                reason=f"{cmd.name} {cmd.version} has no evaluation set; register it with --eval-set so "
                "candidates can be measured against the base model",
                profile=profile,
            )
        with tempfile.TemporaryDirectory(prefix="slmops-optimizer-") as tmp:
            work = Path(tmp)
            try:
                base, eval_set = await self._fetch(detail.version.artifact, eval_set_ref, work)
                result = await self._search(base, eval_set, profile, work, optimization_id, ids)
            except ArtifactNotFound as exc:
                reason = f"the registered files of {cmd.name} {cmd.version} cannot be read: {exc}"
                return OptimizationFailed(**ids, reason=reason, profile=profile)
            except ArtifactMismatch as exc:
                reason = f"refusing to optimize {cmd.name} {cmd.version}: {exc}"
                log.error("registered artifact changed in S3", extra={"key": exc.key, "expected": exc.expected})
                return OptimizationFailed(**ids, reason=reason, profile=profile)
            except EvaluationError as exc:
                reason = f"the base model cannot be measured on its evaluation set: {exc}"
                return OptimizationFailed(**ids, reason=reason, profile=profile)
            if result.chosen is None:
                return OptimizationFailed(
                    **ids,
                    reason=_why_nothing_fits(result.candidates, profile),
                    profile=profile,
                    candidates=result.candidates,
                    misses=domain.budget_misses(result.candidates, profile),
                )
            try:
                registered = await self._register(detail, profile, result, result.chosen)
            except ArtifactMismatch as exc:
                log.error("the registry recorded other bytes than the variant built", extra={"key": exc.key})
                return OptimizationFailed(
                    **ids,
                    reason=f"the registry did not record the variant this search built: {exc}",
                    profile=profile,
                    candidates=result.candidates,
                )
        return OptimizationCompleted(
            **ids,
            base_digest=detail.version.artifact.digest,
            profile=profile,
            registered=[registered],
            candidates=result.candidates,
        )

    async def _fetch(self, model: Artifact, eval_record: EvalSet, work: Path) -> tuple[Path, dict[str, np.ndarray]]:
        """Download the base model and its evaluation set, each checked against the registry's record
        (`fetch.py`), so nothing is measured or built from bytes the registry did not sign."""
        base = work / "base.onnx"
        eval_path = work / "eval.npz"
        await asyncio.to_thread(fetch_verified, self._blobs, Expected.of("base model", model), base)
        await asyncio.to_thread(fetch_verified, self._blobs, Expected.of("evaluation set", eval_record), eval_path)
        with np.load(eval_path, allow_pickle=False) as npz:
            eval_set = {name: npz[name] for name in npz.files}
        return base, eval_set

    async def _search(
        self,
        base: Path,
        eval_set: dict[str, np.ndarray],
        profile: DeviceProfile,
        work: Path,
        optimization_id: str,
        ids: dict[str, str],
    ) -> SearchResult:
        loop = asyncio.get_running_loop()

        def report(p: Progress) -> None:
            event = OptimizationProgress(
                **ids,
                candidate=p.candidate,
                stage=p.stage,
                completed=p.completed,
                total=p.total,
                metrics=p.metrics,
                error=p.error,
            )
            event_id = deterministic_id("optimization.progress", optimization_id, p.candidate, p.stage)
            # Block the search thread until published: progress stays in order and ahead of the result.
            asyncio.run_coroutine_threadsafe(self._progress(event, event_id), loop).result(timeout=60)

        return await asyncio.to_thread(
            run_search,
            base=base,
            eval_set=eval_set,
            profile=profile,
            workdir=work / "candidates",
            threads=self._threads,
            concurrency=self._concurrency,
            on_progress=report,
        )

    async def _register(
        self, detail: ModelDetail, profile: DeviceProfile, result: SearchResult, chosen: Candidate
    ) -> RegisteredVariant:
        built = result.built[chosen.recipe.name]
        metrics = chosen.metrics
        if metrics is None:
            raise OptimizerError(f"candidate {chosen.recipe.name!r} was chosen without metrics")
        staged = await asyncio.to_thread(self._blobs.upload_staging, built.path)
        cmd = RegisterVariant(
            name=detail.version.name,
            version=detail.version.version,
            variant=chosen.recipe.name,
            artifact=ObjectRef(key=staged.key),
            # The class is what the rollout service resolves a device's variant by.
            recipe={
                "recipe": chosen.recipe.model_dump(mode="json"),
                "profile": profile.name,
                "device_class": profile.device_class,
            },
            metrics=_flat_metrics(metrics, base=result.base),
            requirements=domain.requirements_for(
                contrib_ops=built.contrib_ops,
                opset=None,
                size_bytes=metrics.size_bytes,
            ),
        )
        outcome = await self._registry.register_variant(cmd)
        if outcome.status == "rejected":
            raise OptimizerError(f"the registry refused variant {chosen.recipe.name!r}: {outcome.reason}")
        _check_recorded(chosen.recipe.name, staged, outcome.result.get("digest"))
        log.info("variant registered", extra={"variant": chosen.recipe.name, "digest": staged.digest})
        return RegisteredVariant(
            variant=chosen.recipe.name, digest=staged.digest, recipe=chosen.recipe.name, metrics=metrics
        )


def _check_recorded(variant: str, staged: StoredObject, recorded: object) -> None:
    """The registry read the staged upload itself; its verdict must name the bytes that were built.

    The optimizer cannot stop the registry from reading a replaced upload (the command names a key,
    not a digest), but it can refuse to report someone else's bytes as its result.

    Raises:
        ArtifactMismatch: the verdict names another digest.
        OptimizerError: the verdict names none (the registry always does: a broken contract).
    """
    if not isinstance(recorded, str):
        raise OptimizerError(f"the registry's verdict on variant {variant!r} does not name the digest it recorded")
    if recorded != staged.digest:
        raise ArtifactMismatch(
            artifact=f"variant {variant!r} staged",
            key=staged.key,
            expected=staged.digest,
            actual=recorded,
            expected_size=staged.size_bytes,
            actual_size=None,
            consequence="the staged upload was replaced before the registry read it; do not deploy that variant",
        )


def _flat_metrics(metrics: CandidateMetrics, *, base: Measurement | None) -> dict[str, float]:
    """The variant's metrics as the registry stores them: flat numbers, ratios against the base."""
    flat = {
        "size_bytes": float(metrics.size_bytes),
        "compressed_size_bytes": float(metrics.compressed_size_bytes),
        "latency_p50_ms": metrics.latency_p50_ms,
        "latency_p95_ms": metrics.latency_p95_ms,
        "threads": float(metrics.threads),
    } | {f"fidelity.{key}": value for key, value in metrics.fidelity.items()}
    if base is not None:
        flat["size_ratio"] = flat["size_bytes"] / base.size_bytes
        flat["speedup_p50"] = base.latency_p50_ms / max(flat["latency_p50_ms"], 1e-9)
    return flat


def _why_nothing_fits(candidates: list[Candidate], profile: DeviceProfile) -> str:
    measured = [c for c in candidates if c.metrics is not None]
    if not measured:
        return f"no candidate of profile {profile.name!r} could be built: " + "; ".join(
            f"{c.recipe.name}: {c.error}" for c in candidates
        )
    return f"no candidate meets the budgets of profile {profile.name!r}: " + "; ".join(
        f"{c.recipe.name}: {', '.join(c.metrics.failures)}" for c in candidates if c.metrics is not None
    )
