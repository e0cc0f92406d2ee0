"""Reading and validating ONNX files and evaluation sets (services/registry/inspection.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from samples.tiny import build_tiny_embedder, write_sample
from services.registry.errors import InvalidEvalSet, InvalidModel
from services.registry.inspection import inspect_eval_set, inspect_model


@pytest.fixture
def sample(tmp_path: Path) -> tuple[Path, Path]:
    return write_sample(tmp_path)


def test_reads_the_facts_from_the_file(sample: tuple[Path, Path]) -> None:
    info = inspect_model(sample[0])
    assert info.ir_version == 8 and info.opsets == {"": 17}
    assert info.producer == "slmops-sample 1"
    assert [(i.name, i.dtype, i.shape) for i in info.inputs] == [
        ("input_ids", "int64", ["batch", "sequence"]),
        ("attention_mask", "int64", ["batch", "sequence"]),
    ]
    assert "Gather" in info.op_types and "MatMul" in info.op_types


def test_external_data_is_refused(tmp_path: Path) -> None:
    model = build_tiny_embedder()
    path = tmp_path / "ext.onnx"
    onnx.save(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    with pytest.raises(InvalidModel, match="external data"):
        inspect_model(path)


def test_a_model_onnxruntime_cannot_load_is_refused(tmp_path: Path) -> None:
    model = build_tiny_embedder()
    model.graph.node[3].domain = "com.example"  # Tanh from an operator set no runtime has
    model.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    with pytest.raises(InvalidModel):
        inspect_model(path)


def test_eval_set_checks(sample: tuple[Path, Path], tmp_path: Path) -> None:
    info = inspect_model(sample[0])
    ok = inspect_eval_set(sample[1], digest="0" * 64, key="k", inputs=info.inputs)
    assert ok.samples == 32 and ok.arrays["input_ids"] == [32, 16]
    cases = {
        "not-zip": (b"nope", "not a NumPy .npz"),
        "dtype": (
            {"input_ids": np.zeros((2, 3), np.int32), "attention_mask": np.zeros((2, 3), np.int64)},
            "wants int64",
        ),
        "rank": ({"input_ids": np.zeros((2,), np.int64), "attention_mask": np.zeros((2, 3), np.int64)}, "rank 1"),
        "samples": (
            {"input_ids": np.zeros((2, 3), np.int64), "attention_mask": np.zeros((3, 3), np.int64)},
            "first (sample) axis",
        ),
    }
    for label, (content, message) in cases.items():
        path = tmp_path / f"{label}.npz"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            np.savez(path, **content)
        with pytest.raises(InvalidEvalSet, match=message.replace("(", r"\(").replace(")", r"\)")):
            inspect_eval_set(path, digest="0" * 64, key="k", inputs=info.inputs)
