"""A tiny, deterministic sentence-embedding model built with onnx's helpers, and its evaluation set.

It has the shape of the real thing (token ids and attention mask in, a mean-pooled, normalised
embedding out, via Gather → MatMul → Add → Tanh → masked mean → L2 norm) at a size that makes
tests and `make demo` fast and needs no download. The same seed always gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def build_tiny_embedder(*, vocab: int = 1000, dim: int = 64, seed: int = 0) -> onnx.ModelProto:
    """The model as a ModelProto (about vocab*dim + dim*dim + dim parameters)."""
    rng = np.random.default_rng(seed)
    emb = numpy_helper.from_array((rng.standard_normal((vocab, dim)) * 0.1).astype(np.float32), "embeddings")
    w = numpy_helper.from_array((rng.standard_normal((dim, dim)) / np.sqrt(dim)).astype(np.float32), "dense.weight")
    b = numpy_helper.from_array((rng.standard_normal(dim) * 0.01).astype(np.float32), "dense.bias")
    axes1 = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes1")
    axes2 = numpy_helper.from_array(np.array([2], dtype=np.int64), "axes_last")
    eps = numpy_helper.from_array(np.array(1e-9, dtype=np.float32), "eps")
    nodes = [
        helper.make_node("Gather", ["embeddings", "input_ids"], ["tok"], axis=0),
        helper.make_node("MatMul", ["tok", "dense.weight"], ["proj"]),
        helper.make_node("Add", ["proj", "dense.bias"], ["biased"]),
        helper.make_node("Tanh", ["biased"], ["hidden"]),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "axes_last"], ["mask3"]),
        helper.make_node("Mul", ["hidden", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axes1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "axes1"], ["count"], keepdims=0),
        helper.make_node("Max", ["count", "eps"], ["count_safe"]),
        helper.make_node("Div", ["summed", "count_safe"], ["pooled"]),
        helper.make_node("LpNormalization", ["pooled"], ["embedding"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_embedder",
        inputs=[
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        outputs=[helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        initializer=[emb, w, b, axes1, axes2, eps],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="slmops-sample", producer_version="1"
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def build_eval_set(*, samples: int = 32, sequence: int = 16, vocab: int = 1000, seed: int = 1) -> dict[str, np.ndarray]:
    """Random token sequences with padded tails, keyed by the model's input names."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(samples, sequence), dtype=np.int64)
    lengths = rng.integers(4, sequence + 1, size=samples)
    mask = (np.arange(sequence)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask}


def write_sample(directory: Path, *, seed: int = 0, dim: int = 64) -> tuple[Path, Path]:
    """Write `tiny-embedder.onnx` and `tiny-embedder-eval.npz` into `directory`; returns both paths.

    A larger `dim` is a genuinely slower model (its dense layer costs dim² per token): what the
    demo rolls out to show a gate catching a regression that was measured, not staged."""
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / "tiny-embedder.onnx"
    eval_path = directory / "tiny-embedder-eval.npz"
    onnx.save(build_tiny_embedder(seed=seed, dim=dim), str(model_path))
    with eval_path.open("wb") as f:
        np.savez(f, **build_eval_set())  # type: ignore[arg-type]  # numpy's stub mistypes **arrays
    return model_path, eval_path
