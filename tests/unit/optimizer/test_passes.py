"""Each technique on the tiny models: it runs, its output loads, and it does what it claims."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from services.optimizer.errors import PassError
from services.optimizer.evaluation import compressed_size
from services.optimizer.passes import PassContext, PassResult, build_pass
from shared.messages.optimizer import PassSpec


def run(pass_type: str, source: Path, output: Path, context: PassContext, **config: object) -> PassResult:
    return build_pass(PassSpec(type=pass_type, config=config)).run(source, output, context=context)


def ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def outputs(path: Path, eval_set: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: eval_set[i.name] for i in session.get_inputs()}
    return np.asarray(session.run(None, feed)[0])


@pytest.mark.parametrize(
    ("pass_type", "config"),
    [
        ("OrtGraphOptimization", {"level": "basic"}),
        ("OrtGraphOptimization", {"level": "extended"}),
        ("OnnxDynamicQuantization", {}),
        ("OnnxDynamicQuantization", {"per_channel": True, "reduce_range": True, "weight_type": "quint8"}),
        ("OnnxStaticQuantization", {"calibration_samples": 8, "calibration_batch_size": 4}),
        ("OnnxStaticQuantization", {"calibration_method": "Percentile", "calibration_samples": 8, "per_channel": True}),
        ("OnnxStaticQuantization", {"calibration_method": "Entropy", "calibration_samples": 8}),
        ("Int4WeightOnlyQuantization", {"op_types_to_quantize": ["MatMul", "Gather"]}),
        ("Float16Conversion", {}),
        ("MagnitudePruning", {"sparsity": 0.3}),
        ("ActivationSmoothing", {"calibration_samples": 8}),
    ],
)
def test_pass_output_loads_and_runs(
    pass_type: str, config: dict[str, object], embedder: Path, tmp_path: Path, context: PassContext
) -> None:
    assert context.eval_set is not None
    result = run(pass_type, embedder, tmp_path / "out.onnx", context, **config)
    assert result.output == tmp_path / "out.onnx" and result.notes
    embedding = outputs(result.output, context.eval_set)
    assert embedding.shape == (24, 64) and np.all(np.isfinite(embedding))


def test_dynamic_quantization_leaves_excluded_nodes_in_float(
    classifier: Path, tmp_path: Path, context: PassContext
) -> None:
    result = run(
        "OnnxDynamicQuantization", classifier, tmp_path / "q.onnx", context, nodes_to_exclude=["head.*", "none.*"]
    )
    model = onnx.load(str(result.output))
    assert [n.name for n in model.graph.node if n.op_type == "MatMul"] == ["head.MatMul"]
    assert "MatMulInteger" in ops(result.output)
    assert any("left 2 node(s) alone: head.MatMul, head.Add" in n for n in result.notes)
    assert any("matched no node: none.*" in n for n in result.notes)


def test_int4_emits_matmulnbits_and_reports_contrib_ops(embedder: Path, tmp_path: Path, context: PassContext) -> None:
    result = run("Int4WeightOnlyQuantization", embedder, tmp_path / "q4.onnx", context, block_size=32)
    assert "MatMulNBits" in ops(result.output) and "MatMul" not in ops(result.output)
    assert result.contrib_ops == ["com.microsoft.MatMulNBits"]


def test_int4_on_the_gather_only_emits_gather_block_quantized(
    embedder: Path, tmp_path: Path, context: PassContext
) -> None:
    result = run("Int4WeightOnlyQuantization", embedder, tmp_path / "g4.onnx", context, op_types_to_quantize=["Gather"])
    assert {"GatherBlockQuantized", "MatMul"} <= ops(result.output)
    assert result.contrib_ops == ["com.microsoft.GatherBlockQuantized"]
    assert result.opset == 21  # int4 tensors need opset 21 / IR 10


def test_fp16_keep_io_types_keeps_float32_inputs_and_outputs(
    classifier: Path, tmp_path: Path, context: PassContext
) -> None:
    kept = run("Float16Conversion", classifier, tmp_path / "kept.onnx", context, keep_io_types=True)
    converted = run("Float16Conversion", classifier, tmp_path / "converted.onnx", context, keep_io_types=False)
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert onnx.load(str(kept.output)).graph.output[0].type.tensor_type.elem_type == float32
    assert onnx.load(str(converted.output)).graph.output[0].type.tensor_type.elem_type == float16
    weights = {i.name: i.data_type for i in onnx.load(str(kept.output)).graph.initializer}
    assert weights["dense.weight"] == float16


def test_per_tensor_pruning_gives_every_tensor_the_target_sparsity(
    embedder: Path, tmp_path: Path, context: PassContext
) -> None:
    result = run("MagnitudePruning", embedder, tmp_path / "p.onnx", context, sparsity=0.8, include_embeddings=True)
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(result.output)).graph.initializer}
    for name in ("embeddings", "dense.weight"):
        assert np.count_nonzero(weights[name] == 0) == int(0.8 * weights[name].size)
    assert np.count_nonzero(weights["dense.bias"] == 0) == 0  # a bias is not a MatMul weight


def test_global_pruning_reaches_the_target_over_all_weights(
    embedder: Path, tmp_path: Path, context: PassContext
) -> None:
    result = run(
        "MagnitudePruning",
        embedder,
        tmp_path / "p.onnx",
        context,
        sparsity=0.8,
        include_embeddings=True,
        scope="global",
    )
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(result.output)).graph.initializer}
    pruned = np.concatenate([weights["embeddings"].ravel(), weights["dense.weight"].ravel()])
    assert np.count_nonzero(pruned == 0) == int(0.8 * pruned.size)


def test_pruning_shrinks_compressed_size_not_size_on_disk(embedder: Path, tmp_path: Path, context: PassContext) -> None:
    result = run("MagnitudePruning", embedder, tmp_path / "p.onnx", context, sparsity=0.8, include_embeddings=True)
    assert compressed_size(result.output) < 0.6 * compressed_size(embedder)
    assert result.output.stat().st_size == pytest.approx(embedder.stat().st_size, rel=0.01)


def test_pruning_keeps_embeddings_unless_asked(embedder: Path, tmp_path: Path, context: PassContext) -> None:
    result = run("MagnitudePruning", embedder, tmp_path / "p.onnx", context, sparsity=0.5)
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(result.output)).graph.initializer}
    assert np.count_nonzero(weights["embeddings"] == 0) == 0
    assert np.count_nonzero(weights["dense.weight"] == 0) == weights["dense.weight"].size // 2


def test_static_quantization_without_an_eval_set_fails_clearly(embedder: Path, tmp_path: Path) -> None:
    context = PassContext(workdir=tmp_path, eval_set=None)
    with pytest.raises(PassError) as caught:
        run("OnnxStaticQuantization", embedder, tmp_path / "s.onnx", context)
    assert str(caught.value) == (
        "pass OnnxStaticQuantization: needs an evaluation set for calibration, and none was given"
    )


def test_static_quantization_needs_every_input_in_the_eval_set(
    embedder: Path, tmp_path: Path, eval_set: dict[str, np.ndarray]
) -> None:
    context = PassContext(workdir=tmp_path, eval_set={"input_ids": eval_set["input_ids"]})
    with pytest.raises(PassError, match="no array for input.s. attention_mask"):
        run("OnnxStaticQuantization", embedder, tmp_path / "s.onnx", context)


def test_a_quantizer_that_gives_up_becomes_a_pass_error(embedder: Path, tmp_path: Path, context: PassContext) -> None:
    # The embedding table is [vocab, 64]: a Gather axis of 2 does not exist, and the quantizer asserts.
    with pytest.raises(PassError, match="matmul_nbits_quantizer failed: AssertionError"):
        run(
            "Int4WeightOnlyQuantization",
            embedder,
            tmp_path / "q.onnx",
            context,
            op_types_to_quantize=["Gather"],
            quant_axes={"Gather": 2},
        )


def test_smoothing_preserves_the_float_outputs(embedder: Path, tmp_path: Path, context: PassContext) -> None:
    assert context.eval_set is not None
    result = run("ActivationSmoothing", embedder, tmp_path / "s.onnx", context, alpha=0.7)
    assert "Mul" in ops(result.output) and result.contrib_ops == []
    np.testing.assert_allclose(outputs(result.output, context.eval_set), outputs(embedder, context.eval_set), atol=1e-5)


def test_smoothing_without_an_eval_set_fails_clearly(embedder: Path, tmp_path: Path) -> None:
    with pytest.raises(PassError, match="ActivationSmoothing: needs an evaluation set"):
        run("ActivationSmoothing", embedder, tmp_path / "s.onnx", PassContext(workdir=tmp_path))
