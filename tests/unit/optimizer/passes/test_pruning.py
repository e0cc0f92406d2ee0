"""MagnitudePruning on the tiny model: the sparsity it reaches and what it buys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from services.optimizer.evaluation import compressed_size
from services.optimizer.passes import PassContext
from tests.unit.optimizer.passes.support import run


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
