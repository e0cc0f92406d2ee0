"""Every registered pass on the tiny model: it runs and its output loads (the base class checks both)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.optimizer.passes import PassContext
from tests.unit.optimizer.passes.support import outputs, run


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
