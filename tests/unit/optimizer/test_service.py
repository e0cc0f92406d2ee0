"""The optimizer's use cases (services/optimizer/service.py) over its in-memory ports, with the real search.

The search runs for real on the tiny sample embedder with one or two cheap recipes, so each test
takes milliseconds; no assertion reads a clock. What the integration tests prove through the bus,
these prove about the logic: the final event and its id, the variant registration the winner gets,
the reasons and gaps of a failure, the order of progress, and the commands auto-optimization queues.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from services.optimizer.adapters.memory import MemoryBlobs, MemoryRegistry
from services.optimizer.errors import OptimizerError, RegistryUnavailable
from services.optimizer.service import OptimizerService
from shared.artifacts import STAGING_PREFIX, StorageUnavailable
from shared.digests import sha256_file
from shared.messages.envelope import deterministic_id
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
from shared.messages.registry import (
    Artifact,
    EvalSet,
    ModelDetail,
    ModelRegistered,
    ModelVersionRecord,
    OnnxInfo,
    RegisterVariant,
)
from shared.outcomes import Outcome

NAME, VERSION = "tiny", "1.0"
INT8 = Recipe(name="int8-pc", passes=[PassSpec(type="OnnxDynamicQuantization", config={"per_channel": True})])
FP16 = Recipe(name="fp16", passes=[PassSpec(type="Float16Conversion", config={"keep_io_types": True})])
BROKEN = Recipe(name="broken", passes=[PassSpec(type="OnnxStaticQuantization", config={"calibration_samples": 0})])
PROFILE = DeviceProfile(
    name="test-device",
    device_class="test",
    speed_factor=2.0,
    budgets=Budgets(min_fidelity={"cosine_mean": 0.95}),
    recipes=[INT8],
)


class ProgressRecorder:
    """The progress sink: every event published, with its id, in order."""

    def __init__(self) -> None:
        self.published: list[tuple[OptimizationProgress, str]] = []

    async def __call__(self, event: OptimizationProgress, event_id: str) -> None:
        self.published.append((event, event_id))


def detail_for(blobs: MemoryBlobs, model: Path, eval_path: Path | None) -> ModelDetail:
    """A registered version as `registry.get` answers it, with its blobs in the store."""
    digest, size = sha256_file(model)
    stored, _ = blobs.put_blob(model, digest=digest)
    eval_set = None
    if eval_path is not None:
        eval_digest, eval_size = sha256_file(eval_path)
        eval_stored, _ = blobs.put_blob(eval_path, digest=eval_digest)
        eval_set = EvalSet(
            digest=eval_digest, size_bytes=eval_size, key=eval_stored.key, samples=24, arrays={"input_ids": [24, 16]}
        )
    record = ModelVersionRecord(
        name=NAME,
        version=VERSION,
        artifact=Artifact(digest=digest, size_bytes=size, key=stored.key, signature="c2ln"),
        onnx=OnnxInfo(ir_version=8, opsets={"": 17}, inputs=[], outputs=[], parameters=0, op_types=[]),
        eval_set=eval_set,
        registered_at=datetime(2026, 1, 1, tzinfo=UTC),
        command_id="cmd-register",
    )
    return ModelDetail(version=record, variants=[], aliases=[])


@pytest.fixture(scope="module")
def eval_npz(tmp_path_factory: pytest.TempPathFactory, eval_set: dict[str, np.ndarray]) -> Path:
    path = tmp_path_factory.mktemp("eval") / "eval.npz"
    with path.open("wb") as f:
        np.savez(f, **eval_set)  # type: ignore[arg-type]  # numpy's stub mistypes **arrays
    return path


@pytest.fixture
def blobs() -> MemoryBlobs:
    return MemoryBlobs()


@pytest.fixture
def source(blobs: MemoryBlobs, embedder: Path, eval_npz: Path) -> ModelDetail:
    return detail_for(blobs, embedder, eval_npz)


@pytest.fixture
def registry(source: ModelDetail, blobs: MemoryBlobs) -> MemoryRegistry:
    return MemoryRegistry(source, blobs=blobs)


@pytest.fixture
def progress() -> ProgressRecorder:
    return ProgressRecorder()


@pytest.fixture
def optimizer(registry: MemoryRegistry, blobs: MemoryBlobs, progress: ProgressRecorder) -> OptimizerService:
    return OptimizerService(
        registry=registry,
        blobs=blobs,
        profiles={PROFILE.name: PROFILE},
        concurrency=1,
        auto_profiles=("rpi5", "jetson"),
        progress=progress,
    )


async def optimize(
    optimizer: OptimizerService,
    profile: str | DeviceProfile = PROFILE,
    *,
    command_id: str = "cmd-optimize",
    recipes: list[Recipe] | None = None,
) -> tuple[Outcome, OptimizationCompleted | OptimizationFailed]:
    cmd = OptimizeModel(name=NAME, version=VERSION, profile=profile, recipes=recipes)
    outcome = await optimizer.optimize(cmd, command_id=command_id)
    ((final, _),) = outcome.events
    assert isinstance(final, OptimizationCompleted | OptimizationFailed)
    return outcome, final


def with_budgets(**budgets: object) -> DeviceProfile:
    return PROFILE.model_copy(update={"budgets": Budgets(**budgets)})


# --- a search that succeeds ---------------------------------------------------------------------


async def test_optimize_completes_with_an_event_id_derived_from_the_command(optimizer: OptimizerService) -> None:
    outcome, final = await optimize(optimizer, command_id="cmd-42")
    assert isinstance(final, OptimizationCompleted)
    assert outcome.status == "applied" and outcome.result == {"event": "optimization.completed"}
    assert outcome.events[0][1] == deterministic_id("optimization.completed", "cmd-42")
    assert (final.optimization_id, final.name, final.version) == ("cmd-42", NAME, VERSION)


async def test_the_completed_event_carries_every_candidate_and_the_winner(
    optimizer: OptimizerService, source: ModelDetail
) -> None:
    _, final = await optimize(optimizer, PROFILE.model_copy(update={"recipes": [INT8, FP16]}))
    assert isinstance(final, OptimizationCompleted)
    assert final.base_digest == source.version.artifact.digest
    assert [c.recipe.name for c in final.candidates] == ["int8-pc", "fp16"]
    assert all(c.metrics is not None and c.metrics.meets_budget for c in final.candidates)
    (winner,) = final.registered
    sizes = {c.recipe.name: c.metrics.size_bytes for c in final.candidates if c.metrics is not None}
    assert winner.variant == min(sizes, key=lambda n: sizes[n]), "the smallest candidate within budget wins"


async def test_the_winner_is_staged_and_sent_for_registration_with_its_lineage(
    optimizer: OptimizerService, registry: MemoryRegistry, blobs: MemoryBlobs
) -> None:
    _, final = await optimize(optimizer)
    assert isinstance(final, OptimizationCompleted)
    (winner,) = final.registered
    (sent,) = registry.sent
    assert (sent.name, sent.version, sent.variant) == (NAME, VERSION, winner.variant)
    assert sent.artifact.key.startswith(STAGING_PREFIX) and sent.artifact.bucket is None
    staged = blobs.read_bytes(sent.artifact.key)
    assert len(staged) == winner.metrics.size_bytes
    assert sent.recipe == {
        "recipe": INT8.model_dump(mode="json"),
        "profile": PROFILE.name,
        "device_class": PROFILE.device_class,
    }


async def test_the_variant_s_metrics_are_flat_and_relative_to_the_base(
    optimizer: OptimizerService, registry: MemoryRegistry, source: ModelDetail
) -> None:
    _, final = await optimize(optimizer)
    assert isinstance(final, OptimizationCompleted)
    measured = final.registered[0].metrics
    metrics = registry.sent[0].metrics
    assert metrics["size_bytes"] == measured.size_bytes
    assert metrics["size_ratio"] == pytest.approx(measured.size_bytes / source.version.artifact.size_bytes)
    assert 0 < metrics["size_ratio"] < 0.5, "INT8 weights are a quarter of FP32's"
    assert metrics["fidelity.cosine_mean"] == measured.fidelity["cosine_mean"] >= 0.95
    assert metrics["speedup_p50"] > 0


async def test_the_variant_s_requirements_follow_its_size(
    optimizer: OptimizerService, registry: MemoryRegistry
) -> None:
    _, final = await optimize(optimizer)
    assert isinstance(final, OptimizationCompleted)
    requirements = registry.sent[0].requirements
    assert requirements.min_onnxruntime is not None and requirements.contrib_ops == []
    size_mb = final.registered[0].metrics.size_bytes / 1024**2
    assert requirements.min_ram_mb is not None and requirements.min_ram_mb >= 2 * size_mb


async def test_the_command_s_recipes_replace_the_profile_s(optimizer: OptimizerService) -> None:
    _, final = await optimize(optimizer, PROFILE.name, recipes=[FP16])
    assert isinstance(final, OptimizationCompleted)
    assert [c.recipe.name for c in final.candidates] == ["fp16"] and final.profile.recipes == [FP16]


async def test_a_broken_recipe_fails_its_candidate_not_the_search(optimizer: OptimizerService) -> None:
    _, final = await optimize(optimizer, PROFILE.model_copy(update={"recipes": [INT8, BROKEN]}))
    assert isinstance(final, OptimizationCompleted)
    broken = next(c for c in final.candidates if c.recipe.name == "broken")
    assert broken.metrics is None and broken.error is not None and "calibration_samples" in broken.error
    assert [r.variant for r in final.registered] == ["int8-pc"]


async def test_a_redelivered_command_announces_the_same_event_for_the_same_bytes(
    optimizer: OptimizerService, registry: MemoryRegistry
) -> None:
    first, first_final = await optimize(optimizer, command_id="cmd-1")
    again, again_final = await optimize(optimizer, command_id="cmd-1")
    assert first.events[0][1] == again.events[0][1], "JetStream drops the second announcement"
    assert isinstance(first_final, OptimizationCompleted) and isinstance(again_final, OptimizationCompleted)
    assert first_final.registered[0].digest == again_final.registered[0].digest
    assert len(registry.sent) == 2, "the registry, not the optimizer, decides the repeat is unchanged"


# --- progress -----------------------------------------------------------------------------------


async def test_progress_is_published_in_order_for_each_candidate(
    optimizer: OptimizerService, progress: ProgressRecorder
) -> None:
    await optimize(optimizer, PROFILE.model_copy(update={"recipes": [INT8, FP16]}), command_id="cmd-p")
    events = [e for e, _ in progress.published]
    for recipe in ("int8-pc", "fp16"):
        stages = [e.stage for e in events if e.candidate == recipe]
        assert stages == ["queued", "optimizing", "evaluating", "evaluated"]
    assert [e.completed for e in events if e.stage == "evaluated"] == [1, 2]
    assert events[-1].completed == events[-1].total == 2
    assert all(e.optimization_id == "cmd-p" for e in events)


async def test_each_progress_event_id_is_derived_from_command_candidate_and_stage(
    optimizer: OptimizerService, progress: ProgressRecorder
) -> None:
    await optimize(optimizer, command_id="cmd-p")
    for event, event_id in progress.published:
        assert event_id == deterministic_id("optimization.progress", "cmd-p", event.candidate, event.stage)
    assert len({event_id for _, event_id in progress.published}) == len(progress.published)


async def test_a_failed_candidate_reports_its_error_in_progress(
    optimizer: OptimizerService, progress: ProgressRecorder
) -> None:
    await optimize(optimizer, PROFILE.model_copy(update={"recipes": [BROKEN]}))
    (failed,) = [e for e, _ in progress.published if e.stage == "failed"]
    assert failed.candidate == "broken" and failed.error is not None and "calibration_samples" in failed.error


# --- searches that fail -------------------------------------------------------------------------


async def test_budgets_nobody_meets_fail_with_each_miss_and_its_gap(
    optimizer: OptimizerService, registry: MemoryRegistry, blobs: MemoryBlobs
) -> None:
    before = blobs.keys()
    outcome, final = await optimize(optimizer, with_budgets(max_size_bytes=1000, min_fidelity={"cosine_mean": 0.95}))
    assert isinstance(final, OptimizationFailed)
    assert outcome.events[0][1] == deterministic_id("optimization.failed", "cmd-optimize")
    assert "no candidate meets the budgets" in final.reason and "max_size_bytes" in final.reason
    (miss,) = final.misses
    (candidate,) = final.candidates
    assert candidate.metrics is not None
    assert (miss.budget, miss.limit, miss.best_candidate) == ("max_size_bytes", 1000, "int8-pc")
    assert miss.gap == candidate.metrics.size_bytes - 1000
    assert registry.sent == [] and blobs.keys() == before, "nothing is staged or sent"


async def test_a_search_where_no_candidate_builds_says_why(optimizer: OptimizerService) -> None:
    _, final = await optimize(optimizer, PROFILE.model_copy(update={"recipes": [BROKEN]}))
    assert isinstance(final, OptimizationFailed)
    assert final.reason.startswith("no candidate of profile 'test-device' could be built: broken:")


async def test_an_unknown_profile_fails_with_the_known_ones(optimizer: OptimizerService) -> None:
    outcome, final = await optimize(optimizer, "nope")
    assert isinstance(final, OptimizationFailed) and outcome.status == "applied"
    assert "unknown profile 'nope'; known profiles: test-device" in final.reason and final.profile is None


async def test_a_missing_version_fails_with_the_reason(optimizer: OptimizerService, registry: MemoryRegistry) -> None:
    cmd = OptimizeModel(name=NAME, version="9.9", profile=PROFILE)
    ((final, _),) = (await optimizer.optimize(cmd, command_id="c")).events
    assert isinstance(final, OptimizationFailed) and final.reason.startswith("no such model version")
    assert final.profile == PROFILE and registry.sent == []


async def test_a_version_without_an_eval_set_fails_with_the_reason(
    blobs: MemoryBlobs, embedder: Path, progress: ProgressRecorder
) -> None:
    registry = MemoryRegistry(detail_for(blobs, embedder, None), blobs=blobs)
    optimizer = OptimizerService(registry=registry, blobs=blobs, profiles={}, progress=progress)
    _, final = await optimize(optimizer)
    assert isinstance(final, OptimizationFailed) and "has no evaluation set" in final.reason
    assert progress.published == [] and registry.sent == []


async def test_a_version_whose_model_blob_is_gone_fails_with_the_reason(
    optimizer: OptimizerService, blobs: MemoryBlobs, source: ModelDetail, progress: ProgressRecorder
) -> None:
    blobs.delete(source.version.artifact.key)
    _, final = await optimize(optimizer)
    assert isinstance(final, OptimizationFailed) and final.profile == PROFILE
    assert final.reason.startswith(f"the registered files of {NAME} {VERSION} cannot be read: no object s3://")
    assert progress.published == []


async def test_a_base_model_that_cannot_run_on_its_eval_set_fails_with_the_reason(
    blobs: MemoryBlobs, embedder: Path, tmp_path: Path, progress: ProgressRecorder
) -> None:
    wrong = tmp_path / "wrong.npz"
    with wrong.open("wb") as f:
        np.savez(f, unrelated=np.zeros((4, 3), dtype=np.float32))  # no array for the model's inputs
    registry = MemoryRegistry(detail_for(blobs, embedder, wrong), blobs=blobs)
    optimizer = OptimizerService(registry=registry, blobs=blobs, profiles={PROFILE.name: PROFILE}, progress=progress)
    _, final = await optimize(optimizer)
    assert isinstance(final, OptimizationFailed)
    assert final.reason.startswith("the base model cannot be measured on its evaluation set:")
    assert registry.sent == []


def flipped(data: bytes) -> bytes:
    """The same number of bytes, one of them changed: what a size check alone would miss."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


@pytest.mark.parametrize(
    ("artifact", "tamper"),
    [
        ("base model", "flip"),
        ("base model", "other model"),
        ("base model", "grown"),
        ("evaluation set", "flip"),
    ],
)
async def test_a_registered_file_changed_in_s3_fails_before_anything_is_built(
    optimizer: OptimizerService,
    registry: MemoryRegistry,
    blobs: MemoryBlobs,
    source: ModelDetail,
    classifier: Path,
    progress: ProgressRecorder,
    artifact: str,
    tamper: str,
) -> None:
    record = source.version.artifact if artifact == "base model" else source.version.eval_set
    assert record is not None
    original = blobs.read_bytes(record.key)
    replacement = {
        "flip": flipped(original),
        "other model": classifier.read_bytes(),  # a valid model, but not the registered one
        "grown": original + b"\0" * 1024,
    }[tamper]
    blobs.put_bytes(record.key, replacement)
    before = blobs.keys()
    outcome, final = await optimize(optimizer)
    assert isinstance(final, OptimizationFailed) and outcome.status == "applied" and final.profile == PROFILE
    assert final.reason.startswith(f"refusing to optimize {NAME} {VERSION}: the {artifact} at {record.key}")
    assert f"expected sha256 {record.digest}, got " in final.reason
    if tamper == "grown":
        assert f"larger than the {record.size_bytes} bytes recorded" in final.reason, "read no further than that"
    else:
        assert f"got sha256 {hashlib.sha256(replacement).hexdigest()}" in final.reason
    assert registry.sent == [] and progress.published == [] and final.candidates == []
    assert blobs.keys() == before, "nothing is staged"


async def test_a_variant_replaced_before_the_registry_read_it_is_not_reported_as_built(
    optimizer: OptimizerService, registry: MemoryRegistry, blobs: MemoryBlobs, embedder: Path
) -> None:
    built: list[str] = []

    def swap(cmd: RegisterVariant) -> None:
        built.append(hashlib.sha256(blobs.read_bytes(cmd.artifact.key)).hexdigest())
        blobs.put_bytes(cmd.artifact.key, embedder.read_bytes())

    registry.before_read = swap
    _, final = await optimize(optimizer)
    assert isinstance(final, OptimizationFailed)
    assert final.reason.startswith("the registry did not record the variant this search built: the variant 'int8-pc'")
    assert f"expected sha256 {built[0]}, got sha256 {hashlib.sha256(embedder.read_bytes()).hexdigest()}" in final.reason
    assert "do not deploy that variant" in final.reason
    assert [c.recipe.name for c in final.candidates] == ["int8-pc"], "the search's measurements are still reported"


async def test_a_refused_registration_is_an_error(optimizer: OptimizerService, registry: MemoryRegistry) -> None:
    registry.refusal = "the registry's disk is full"
    with pytest.raises(OptimizerError, match="refused variant 'int8-pc': the registry's disk is full"):
        await optimize(optimizer)


async def test_a_registry_that_does_not_answer_is_transient(
    optimizer: OptimizerService, registry: MemoryRegistry
) -> None:
    registry.available = False
    with pytest.raises(RegistryUnavailable):
        await optimize(optimizer)


async def test_an_s3_outage_is_transient(optimizer: OptimizerService, blobs: MemoryBlobs) -> None:
    blobs.fail("download")
    with pytest.raises(StorageUnavailable):
        await optimize(optimizer)


# --- auto-optimization --------------------------------------------------------------------------


async def test_a_new_model_is_queued_once_per_auto_profile(optimizer: OptimizerService, source: ModelDetail) -> None:
    outcome = await optimizer.optimize_new_model(ModelRegistered(record=source.version), event_id="evt-1")
    assert outcome.status == "applied"
    digest = source.version.artifact.digest
    assert list(outcome.commands) == [
        (OptimizeModel(name=NAME, version=VERSION, profile="rpi5"), deterministic_id("auto-optimize", digest, "rpi5")),
        (
            OptimizeModel(name=NAME, version=VERSION, profile="jetson"),
            deterministic_id("auto-optimize", digest, "jetson"),
        ),
    ]


async def test_a_new_model_without_an_eval_set_is_not_queued(
    optimizer: OptimizerService, blobs: MemoryBlobs, embedder: Path
) -> None:
    record = detail_for(blobs, embedder, None).version
    outcome = await optimizer.optimize_new_model(ModelRegistered(record=record), event_id="evt-1")
    assert (outcome.status, outcome.commands) == ("unchanged", ())


async def test_without_auto_profiles_nothing_is_queued(
    registry: MemoryRegistry, blobs: MemoryBlobs, source: ModelDetail
) -> None:
    optimizer = OptimizerService(registry=registry, blobs=blobs, profiles={PROFILE.name: PROFILE})
    outcome = await optimizer.optimize_new_model(ModelRegistered(record=source.version), event_id="evt-1")
    assert (outcome.status, outcome.commands) == ("unchanged", ())
