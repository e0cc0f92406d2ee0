"""OnnxStaticQuantization: what calibration needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.optimizer.errors import PassError
from services.optimizer.passes import PassContext
from tests.unit.optimizer.passes.support import run


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
