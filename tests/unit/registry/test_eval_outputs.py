"""What the registry records of a model's outputs on its evaluation set (`EvalOutputs`), the drift
reference the telemetry service holds a fleet's outputs against: measured at registration, for the
version and for each variant on the version's set, and refused with the reason when the model does
not run on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from services.registry.adapters.memory import MemoryBlobs
from services.registry.errors import InvalidEvalSet, InvalidModel
from services.registry.eval_outputs import measure_eval_outputs
from services.registry.service import RegistryService
from shared.artifacts import STAGING_PREFIX
from shared.messages.registry import MAX_EVAL_OUTPUT_ROWS
from tests.unit.registry.test_service import NAME, register, variant_command


def expected(model: Path, eval_set: Path) -> dict[str, tuple[int, float, float]]:
    """The norm and value moments computed directly: the whole set in one batch, numpy's mean/var."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    with np.load(eval_set) as npz:
        feed = {i.name: npz[i.name] for i in session.get_inputs()}
    rows = np.asarray(session.run(None, feed)[0], dtype=np.float64).reshape(len(next(iter(feed.values()))), -1)
    norms = np.linalg.norm(rows, axis=1)
    return {
        "norm": (norms.size, float(norms.mean()), float(norms.var())),
        "value": (rows.size, float(rows.mean()), float(rows.var())),
    }


def float_model(path: Path, *, width: int) -> Path:
    """`y = x`, with `x` float [batch, width]: runs on any float set of that width, fails on others."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


async def test_a_version_records_its_outputs_on_its_evaluation_set(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, eval_set: Path
) -> None:
    await register(registry, blobs, model, eval_set=eval_set)
    recorded = (await registry.get_model(NAME, "1.0")).version.eval_outputs

    assert recorded is not None and recorded.rows == 32 and recorded.output == "embedding"
    for name, (count, mean, variance) in expected(model, eval_set).items():
        moments = recorded.outputs[name]
        assert moments.count == count
        assert moments.mean == pytest.approx(mean, rel=1e-6)
        assert moments.variance == pytest.approx(variance, rel=1e-4, abs=1e-12)
    assert recorded.outputs["norm"].mean == pytest.approx(1.0, abs=1e-5)  # the sample L2-normalises


async def test_a_version_without_an_evaluation_set_records_no_outputs(
    registry: RegistryService, blobs: MemoryBlobs, model: Path
) -> None:
    await register(registry, blobs, model)
    assert (await registry.get_model(NAME, "1.0")).version.eval_outputs is None


async def test_a_variant_is_measured_on_its_version_s_evaluation_set(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, other_model: Path, eval_set: Path
) -> None:
    await register(registry, blobs, model, eval_set=eval_set)
    await registry.register_variant(variant_command(blobs, other_model), command_id="cmd-variant")
    detail = await registry.get_model(NAME, "1.0")
    (variant,) = detail.variants

    assert variant.eval_outputs is not None and variant.eval_outputs.rows == 32
    count, mean, _ = expected(other_model, eval_set)["value"]
    assert variant.eval_outputs.outputs["value"].count == count
    assert variant.eval_outputs.outputs["value"].mean == pytest.approx(mean, rel=1e-6)
    assert detail.version.eval_outputs is not None
    assert variant.eval_outputs.outputs["value"] != detail.version.eval_outputs.outputs["value"]  # other weights


async def test_a_variant_that_does_not_take_its_version_s_inputs_is_refused_and_leaves_nothing(
    registry: RegistryService, blobs: MemoryBlobs, model: Path, eval_set: Path, tmp_path: Path
) -> None:
    await register(registry, blobs, model, eval_set=eval_set)
    stored = set(blobs.keys())
    with pytest.raises(InvalidModel, match=r"does not run on tiny 1\.0's evaluation set: .*input\(s\) x"):
        await registry.register_variant(
            variant_command(blobs, float_model(tmp_path / "other.onnx", width=4)), command_id="cmd-variant"
        )
    assert (await registry.get_model(NAME, "1.0")).variants == []
    assert {k for k in blobs.keys() if not k.startswith(STAGING_PREFIX)} == stored


async def test_a_model_that_fails_on_its_evaluation_set_is_refused_with_the_row(
    registry: RegistryService, blobs: MemoryBlobs, tmp_path: Path
) -> None:
    model = float_model(tmp_path / "identity.onnx", width=4)
    eval_set = tmp_path / "eval.npz"
    np.savez(eval_set, x=np.ones((3, 5), dtype=np.float32))  # the right rank, the wrong width
    with pytest.raises(
        InvalidEvalSet, match="does not run on its evaluation set: onnxruntime failed on evaluation row 0"
    ):
        await register(registry, blobs, model, eval_set=eval_set)
    assert {k for k in blobs.keys() if not k.startswith(STAGING_PREFIX)} == set()  # no blob stored


def test_only_the_first_rows_are_run_and_integer_outputs_have_no_moments(tmp_path: Path) -> None:
    model = float_model(tmp_path / "identity.onnx", width=3)
    eval_set = tmp_path / "eval.npz"
    np.savez(eval_set, x=np.arange(3 * (MAX_EVAL_OUTPUT_ROWS + 10), dtype=np.float32).reshape(-1, 3))
    outputs = measure_eval_outputs(model, eval_set)
    assert outputs is not None and outputs.rows == MAX_EVAL_OUTPUT_ROWS
    assert outputs.outputs["value"].count == 3 * MAX_EVAL_OUTPUT_ROWS
    assert outputs.outputs["value"].mean == pytest.approx((3 * MAX_EVAL_OUTPUT_ROWS - 1) / 2)

    ids = tmp_path / "ids.onnx"
    x = helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", 2])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, ["batch", 2])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "ids", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(ids))
    np.savez(eval_set, x=np.ones((4, 2), dtype=np.int64))
    assert measure_eval_outputs(ids, eval_set) is None
