"""The optimizer service against the real servers: a search registers a variant with lineage, a
profile nobody can meet fails with the gaps, and bad requests fail with a reason."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from services.optimizer.profiles import load_profiles
from shared import bus, subjects
from shared.artifacts import ArtifactStore
from shared.clients import RegistryClient
from shared.messages.envelope import decode
from shared.messages.optimizer import (
    Budgets,
    DeviceProfile,
    OptimizationCompleted,
    OptimizationFailed,
    OptimizationProgress,
    OptimizeModel,
    PassSpec,
    Recipe,
)
from shared.settings import Settings
from tests.conftest import ServiceRunner
from tests.integration.test_registry import register
from tests.support import sample_files, unique

pytestmark = pytest.mark.usefixtures("running_optimizer")

INT8 = Recipe(name="int8-pc", passes=[PassSpec(type="OnnxDynamicQuantization", config={"per_channel": True})])
FP16 = Recipe(name="fp16", passes=[PassSpec(type="Float16Conversion", config={"keep_io_types": True})])
BROKEN = Recipe(name="broken", passes=[PassSpec(type="OnnxStaticQuantization", config={"calibration_samples": 0})])


def profile(**budgets: Any) -> DeviceProfile:
    return DeviceProfile(
        name="test-device", device_class="test", speed_factor=2.0, budgets=Budgets(**budgets), recipes=[INT8, FP16]
    )


async def optimize(
    nc: Client, cmd: OptimizeModel
) -> tuple[OptimizationCompleted | OptimizationFailed, list[OptimizationProgress]]:
    sub = await nc.subscribe(f"{subjects.EVT}.optimization.>")
    progress: list[OptimizationProgress] = []
    try:
        command_id, _ = await bus.send_command(nc, cmd, source="tests")
        while True:
            msg = await sub.next_msg(timeout=120)
            event = decode(msg.data).data
            if getattr(event, "optimization_id", None) != command_id:
                continue
            if isinstance(event, OptimizationProgress):
                progress.append(event)
            else:
                return event, progress
    finally:
        await sub.unsubscribe()


async def test_search_registers_the_best_candidate_as_a_variant_with_lineage(
    nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    model, eval_set = sample_files(tmp_path)
    name = unique("opt")
    base = await register(nc, artifacts, model, name, "1.0", eval_set=eval_set)
    cmd = OptimizeModel(name=name, version="1.0", profile=profile(min_fidelity={"cosine_mean": 0.95}))
    final, progress = await optimize(nc, cmd)
    assert isinstance(final, OptimizationCompleted), final
    assert {c.recipe.name for c in final.candidates} == {"int8-pc", "fp16"}
    assert all(c.metrics is not None and c.metrics.meets_budget for c in final.candidates)
    (winner,) = final.registered
    assert winner.variant == "int8-pc", "the smallest candidate within budget wins"
    stages = [(p.candidate, p.stage) for p in progress]
    assert ("int8-pc", "evaluated") in stages and ("fp16", "evaluated") in stages
    assert progress[-1].completed == progress[-1].total == 2

    detail = await RegistryClient(nc, source="tests").get_model(name, "1.0")
    (variant,) = detail.variants
    assert variant.variant == "int8-pc" and variant.artifact.digest == winner.digest
    assert variant.parent_digest == base.result["digest"]
    assert variant.recipe["profile"] == "test-device"
    assert variant.recipe["recipe"]["passes"][0]["type"] == "OnnxDynamicQuantization"
    assert 0 < variant.metrics["size_ratio"] < 0.5 and variant.metrics["fidelity.cosine_mean"] >= 0.95
    assert variant.requirements.min_onnxruntime and variant.requirements.min_ram_mb


async def test_a_profile_no_candidate_meets_fails_with_each_gap(
    nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    model, eval_set = sample_files(tmp_path)
    name = unique("opt")
    await register(nc, artifacts, model, name, "1.0", eval_set=eval_set)
    impossible = profile(max_size_bytes=1000, min_fidelity={"cosine_mean": 0.95}).model_copy(
        update={"recipes": [INT8, FP16, BROKEN]}
    )
    final, _ = await optimize(nc, OptimizeModel(name=name, version="1.0", profile=impossible))
    assert isinstance(final, OptimizationFailed)
    assert "max_size_bytes" in final.reason
    (miss,) = final.misses
    assert miss.budget == "max_size_bytes" and miss.best_candidate == "int8-pc" and miss.gap > 0
    broken = next(c for c in final.candidates if c.recipe.name == "broken")
    assert broken.error and "calibration_samples" in broken.error, "a bad recipe fails its candidate, not the search"
    detail = await RegistryClient(nc, source="tests").get_model(name, "1.0")
    assert detail.variants == []


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("unknown-profile", "unknown profile 'nope'"),
        ("no-eval-set", "has no evaluation set"),
        ("missing", "no such model version"),
    ],
)
async def test_requests_that_cannot_run_fail_with_a_reason(
    nc: Client, artifacts: ArtifactStore, tmp_path: Path, setup: str, reason: str
) -> None:
    model, _ = sample_files(tmp_path)
    name = unique("opt")
    if setup != "missing":
        await register(nc, artifacts, model, name, "1.0")
    prof: Any = "nope" if setup == "unknown-profile" else profile()
    final, _ = await optimize(nc, OptimizeModel(name=name, version="1.0", profile=prof))
    assert isinstance(final, OptimizationFailed) and reason in final.reason


async def test_a_base_model_swapped_in_s3_after_registration_is_refused(
    nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """Someone with write access to the bucket replaces the registered bytes with another valid model:
    the optimizer must not build (and get signed) a variant of it under the original's name."""
    model, eval_set = sample_files(tmp_path / "registered", seed=61)  # a seed of its own: blobs are shared
    impostor = sample_files(tmp_path / "impostor", seed=62)[0].read_bytes()
    name = unique("opt")
    await register(nc, artifacts, model, name, "1.0", eval_set=eval_set)
    registry = RegistryClient(nc, source="tests")
    record = (await registry.get_model(name, "1.0")).version.artifact
    artifacts.put_bytes(record.key, impostor)
    try:
        final, progress = await optimize(nc, OptimizeModel(name=name, version="1.0", profile=profile()))
    finally:
        artifacts.put_bytes(record.key, model.read_bytes())
    assert isinstance(final, OptimizationFailed), final
    assert final.reason.startswith(f"refusing to optimize {name} 1.0: the base model at {record.key}")
    assert f"expected sha256 {record.digest}, got sha256 {hashlib.sha256(impostor).hexdigest()}" in final.reason
    assert progress == [] and final.candidates == [], "nothing was built or measured"
    assert (await registry.get_model(name, "1.0")).variants == [], "no variant was registered"


def rpi5_without_latency_budget() -> DeviceProfile:
    """The shipped rpi5 profile (its recipes, size and fidelity budgets) sent inline, minus its latency
    budget: host-measured latency varies with the machine's load, and a test must not depend on timing."""
    rpi5 = load_profiles()["rpi5"]
    return rpi5.model_copy(update={"budgets": rpi5.budgets.model_copy(update={"max_p95_latency_ms": None})})


async def test_minilm_for_rpi5_registers_an_int8_variant_within_budget(
    nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """The reference SLM through the rpi5 profile's recipes, size and fidelity budgets, end to end."""
    from samples.minilm import write_minilm

    model, eval_set = write_minilm(tmp_path)
    name = unique("minilm")
    await register(nc, artifacts, model, name, "1.0.0", eval_set=eval_set)
    final, _ = await optimize(nc, OptimizeModel(name=name, version="1.0.0", profile=rpi5_without_latency_budget()))
    assert isinstance(final, OptimizationCompleted), getattr(final, "reason", final)
    assert final.profile.budgets.max_p95_latency_ms is None
    (winner,) = final.registered
    naive = next(c for c in final.candidates if c.recipe.name == "int8-naive")
    assert naive.metrics is not None and not naive.metrics.meets_budget, "naive per-tensor INT8 must not pass"
    assert winner.metrics.size_bytes <= 0.26 * model.stat().st_size
    assert winner.metrics.fidelity["cosine_mean"] >= 0.99 and winner.metrics.fidelity["cosine_min"] >= 0.98


async def test_configured_profiles_optimize_every_new_model(
    settings: Settings, nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """With SLMOPS_OPTIMIZER_AUTO_PROFILES set, registering a model is enough to get its variant."""
    auto = ServiceRunner("optimizer", settings, env={"SLMOPS_OPTIMIZER_AUTO_PROFILES": "jetson"})
    auto.log_path = Path(settings.home) / "optimizer-auto.log"
    await asyncio.to_thread(auto.start)  # start() runs its own event loop for health checks
    try:
        # The session's optimizer answers health pings too: wait for this one's own consumer instead.
        for _ in range(100):
            try:
                await nc.jetstream().consumer_info("SLMOPS_EVENTS", "optimizer-auto")
                break
            except NotFoundError:
                await asyncio.sleep(0.1)
        sub = await nc.subscribe(f"{subjects.EVT}.optimization.completed")
        model, eval_set = sample_files(tmp_path, seed=21)
        name = unique("auto")
        await register(nc, artifacts, model, name, "1.0", eval_set=eval_set)
        while True:
            event = decode((await sub.next_msg(timeout=120)).data).data
            if event.name == name:
                break
        await sub.unsubscribe()
        assert isinstance(event, OptimizationCompleted) and event.profile.name == "jetson"
        detail = await RegistryClient(nc, source="tests").get_model(name, "1.0")
        assert [v.variant for v in detail.variants] == [event.registered[0].variant]
    finally:
        auto.stop()
