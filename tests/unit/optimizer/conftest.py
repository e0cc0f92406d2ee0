"""Tiny generated models for the optimizer's unit tests: the sample embedder and a logits classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from samples.tiny import build_eval_set, build_tiny_embedder
from services.optimizer.passes import PassContext

CLASSES = 4


def build_tiny_classifier(*, vocab: int = 1000, dim: int = 32, seed: int = 2) -> onnx.ModelProto:
    """Token ids -> embedding -> dense + tanh -> mean over tokens -> dense -> logits [batch, CLASSES]."""
    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int, scale: float) -> TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    nodes = [
        helper.make_node("Gather", ["embeddings", "input_ids"], ["tok"], name="embed.Gather", axis=0),
        helper.make_node("MatMul", ["tok", "dense.weight"], ["proj"], name="dense.MatMul"),
        helper.make_node("Tanh", ["proj"], ["hidden"], name="dense.Tanh"),
        helper.make_node("ReduceMean", ["hidden"], ["pooled"], name="pool", axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "head.weight"], ["scores"], name="head.MatMul"),
        helper.make_node("Add", ["scores", "head.bias"], ["logits"], name="head.Add"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_classifier",
        inputs=[helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=[
            weight("embeddings", vocab, dim, scale=0.5),
            weight("dense.weight", dim, dim, scale=1 / np.sqrt(dim)),
            weight("head.weight", dim, CLASSES, scale=1.0),
            weight("head.bias", CLASSES, scale=0.1),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with `embedder.onnx` and `classifier.onnx`, written once per session (read-only use)."""
    directory = tmp_path_factory.mktemp("models")
    onnx.save(build_tiny_embedder(), str(directory / "embedder.onnx"))
    onnx.save(build_tiny_classifier(), str(directory / "classifier.onnx"))
    return directory


@pytest.fixture(scope="session")
def embedder(models: Path) -> Path:
    return models / "embedder.onnx"


@pytest.fixture(scope="session")
def classifier(models: Path) -> Path:
    return models / "classifier.onnx"


@pytest.fixture(scope="session")
def eval_set() -> dict[str, np.ndarray]:
    return build_eval_set(samples=24)


@pytest.fixture(scope="session")
def classifier_eval_set() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {"input_ids": rng.integers(0, 1000, size=(24, 12), dtype=np.int64)}


@pytest.fixture
def context(tmp_path: Path, eval_set: dict[str, np.ndarray]) -> PassContext:
    return PassContext(workdir=tmp_path / "work", eval_set=eval_set)
