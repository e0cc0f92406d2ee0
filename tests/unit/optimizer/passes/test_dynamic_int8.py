"""OnnxDynamicQuantization on the tiny model: what it leaves in float."""

from __future__ import annotations

from pathlib import Path

import onnx

from services.optimizer.passes import PassContext
from tests.unit.optimizer.passes.support import ops, run


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
