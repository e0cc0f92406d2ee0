"""Float16Conversion on the tiny model: what keep_io_types keeps."""

from __future__ import annotations

from pathlib import Path

import onnx

from services.optimizer.passes import PassContext
from tests.unit.optimizer.passes.support import run


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
