"""Int4WeightOnlyQuantization on the tiny model: the block-quantized operators it emits, and its failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.optimizer.errors import PassError
from services.optimizer.passes import PassContext
from tests.unit.optimizer.passes.support import ops, run


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
