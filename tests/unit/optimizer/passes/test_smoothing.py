"""ActivationSmoothing on the tiny model: the float model is unchanged; calibration needs an eval set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.optimizer.errors import PassError
from services.optimizer.passes import PassContext
from tests.unit.optimizer.passes.support import ops, outputs, run


def test_smoothing_preserves_the_float_outputs(embedder: Path, tmp_path: Path, context: PassContext) -> None:
    assert context.eval_set is not None
    result = run("ActivationSmoothing", embedder, tmp_path / "s.onnx", context, alpha=0.7)
    assert "Mul" in ops(result.output) and result.contrib_ops == []
    np.testing.assert_allclose(outputs(result.output, context.eval_set), outputs(embedder, context.eval_set), atol=1e-5)


def test_smoothing_without_an_eval_set_fails_clearly(embedder: Path, tmp_path: Path) -> None:
    with pytest.raises(PassError, match="ActivationSmoothing: needs an evaluation set"):
        run("ActivationSmoothing", embedder, tmp_path / "s.onnx", PassContext(workdir=tmp_path))
