"""Recipes: passes compose, failures name the recipe and the pass, bad recipes fail before any work."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from services.optimizer.errors import InvalidPassConfig, PassError, UnknownPass
from services.optimizer.passes import PassContext
from services.optimizer.recipes import run_recipe
from shared.messages.optimizer import PassSpec, Recipe

MIXED = Recipe(
    name="mixed",
    passes=[
        PassSpec(type="Int4WeightOnlyQuantization", config={"op_types_to_quantize": ["Gather"]}),
        PassSpec(type="ActivationSmoothing", config={"calibration_samples": 8}),
        PassSpec(type="OnnxDynamicQuantization", config={"per_channel": True, "op_types_to_quantize": ["MatMul"]}),
    ],
)


def test_int4_gather_then_int8_matmuls_compose(embedder: Path, tmp_path: Path, context: PassContext) -> None:
    result = run_recipe(MIXED, embedder, tmp_path / "out" / "model.onnx", context=context)
    ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert {"GatherBlockQuantized", "MatMulInteger"} <= ops and "MatMul" not in ops
    assert result.contrib_ops == ["com.microsoft.GatherBlockQuantized"]
    assert result.opset == 21
    assert [r.spec.type for r in result.passes] == [p.type for p in MIXED.passes]
    assert result.notes[0].startswith("Int4WeightOnlyQuantization: int4 symmetric blocks of 32")
    # Intermediate files (and the recipe's private link to the base) stay in the recipe's own
    # directory of the workdir; the last pass writes the output.
    assert sorted(p.name for p in (context.workdir / "mixed").glob("*.onnx")) == [
        "00-base.onnx",
        "01-Int4WeightOnlyQuantization.onnx",
        "02-ActivationSmoothing.onnx",
    ]


def test_records_hold_the_resolved_config(embedder: Path, tmp_path: Path, context: PassContext) -> None:
    recipe = Recipe(name="dyn", passes=[PassSpec(type="OnnxDynamicQuantization", config={"per_channel": True})])
    result = run_recipe(recipe, embedder, tmp_path / "model.onnx", context=context)
    (spec,) = result.resolved_recipe
    assert spec.config["per_channel"] is True and spec.config["weight_type"] == "qint8"
    assert result.passes[0].output_bytes == (tmp_path / "model.onnx").stat().st_size


def test_a_failing_pass_names_the_recipe_and_the_step(embedder: Path, tmp_path: Path) -> None:
    recipe = Recipe(
        name="static",
        passes=[PassSpec(type="OrtGraphOptimization"), PassSpec(type="OnnxStaticQuantization")],
    )
    with pytest.raises(PassError) as caught:
        run_recipe(recipe, embedder, tmp_path / "model.onnx", context=PassContext(workdir=tmp_path, eval_set=None))
    assert str(caught.value).startswith("recipe 'static': pass OnnxStaticQuantization (step 2): needs an evaluation")
    assert caught.value.recipe == "static"


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        (PassSpec(type="Quantize"), UnknownPass, "recipe 'bad, step 2': unknown pass type 'Quantize'"),
        (
            PassSpec(type="MagnitudePruning", config={"sparsity": 2}),
            InvalidPassConfig,
            "recipe 'bad, step 2': invalid config for pass MagnitudePruning: sparsity",
        ),
    ],
)
def test_a_bad_recipe_fails_before_any_pass_runs(
    spec: PassSpec, error: type[Exception], message: str, embedder: Path, tmp_path: Path, context: PassContext
) -> None:
    recipe = Recipe(name="bad", passes=[PassSpec(type="OrtGraphOptimization"), spec])
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_recipe(recipe, embedder, tmp_path / "model.onnx", context=context)
    assert not context.workdir.exists()


def test_recipes_sharing_one_base_model_can_run_concurrently(tmp_path: Path) -> None:
    """Quantizers write scratch files beside their input; concurrent recipes must not collide."""
    from concurrent.futures import ThreadPoolExecutor

    import onnx

    from samples.tiny import build_eval_set, build_tiny_embedder
    from services.optimizer.passes import PassContext
    from services.optimizer.recipes import run_recipe
    from shared.messages.optimizer import PassSpec, Recipe

    base = tmp_path / "base.onnx"
    onnx.save(build_tiny_embedder(), str(base))
    recipes = [
        Recipe(name=f"r{i}", passes=[PassSpec(type="OnnxDynamicQuantization", config={"per_channel": i % 2 == 0})])
        for i in range(6)
    ]
    context = PassContext(workdir=tmp_path / "work", eval_set=build_eval_set())
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(
            pool.map(lambda r: run_recipe(r, base, tmp_path / r.name / "out.onnx", context=context), recipes)
        )
    assert all(r.path.exists() for r in results)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["base.onnx"], "nothing written beside the base"
