"""Unstructured magnitude pruning: set the smallest-magnitude weights to zero.

Be clear about what this buys. onnxruntime on the CPU runs dense kernels, so zeros cost as much to
multiply as any other number: a pruned model is exactly as large on disk and exactly as fast. The gain is
in transfer: runs of zeros compress, so the download (zstd-compressed size, which the evaluation
reports) shrinks, and it can be combined with quantization. Without fine-tuning afterwards, fidelity
falls quickly beyond moderate sparsity; the evaluation measures by how much.

Pruning per tensor gives every weight matrix the same sparsity; global pruning ranks all chosen weights
together, so tensors with many small weights give up more (usually better fidelity at the same sparsity).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import onnx
from onnx import numpy_helper
from pydantic import Field

from services.optimizer.passes.base import OptimizationPass, PassConfig, PassContext, exclusion_notes, resolve_nodes

PrunableOp = Literal["MatMul", "Gemm", "Conv"]
# Which input of each op type carries the weight, when it is an initializer.
_WEIGHT_INPUTS: dict[str, tuple[int, ...]] = {"MatMul": (1, 0), "Gemm": (1, 0), "Conv": (1,), "Gather": (0,)}


class MagnitudePruningConfig(PassConfig):
    """How much to prune, and which weights."""

    sparsity: float = Field(
        default=0.5, ge=0.0, le=0.95, description="fraction of the chosen weights to set to zero (0 to 0.95)"
    )
    op_types: tuple[PrunableOp, ...] = Field(
        default=("MatMul", "Gemm"), min_length=1, description="prune the float weight initializers feeding these ops"
    )
    include_embeddings: bool = Field(
        default=False, description="also prune tables read by Gather (embeddings; pruning them hurts rare tokens)"
    )
    scope: Literal["per_tensor", "global"] = Field(
        default="per_tensor", description="the same sparsity in every tensor, or one magnitude threshold for all"
    )
    nodes_to_exclude: tuple[str, ...] = Field(default=(), description="node names or fnmatch globs whose weights stay")


class MagnitudePruning(OptimizationPass[MagnitudePruningConfig]):
    """Zero the smallest |w| of the chosen weight initializers, per tensor or globally."""

    name: ClassVar[str] = "MagnitudePruning"
    Config: ClassVar[type[PassConfig]] = MagnitudePruningConfig

    def _run(self, model: onnx.ModelProto, *, source: Path, output: Path, context: PassContext) -> list[str]:
        c = self.config
        pruned = onnx.ModelProto()
        pruned.CopyFrom(model)
        excluded, unmatched = resolve_nodes(pruned, c.nodes_to_exclude)
        targets = self._weights(pruned, excluded=set(excluded))
        arrays = {name: numpy_helper.to_array(init) for name, init in targets.items()}
        if c.scope == "global":
            masks = _global_masks(arrays, c.sparsity)
        else:
            masks = {name: _smallest(np.abs(a).ravel(), c.sparsity).reshape(a.shape) for name, a in arrays.items()}
        zeros = total = 0
        for name, array in arrays.items():
            result = np.where(masks[name], np.zeros((), dtype=array.dtype), array)
            targets[name].CopyFrom(numpy_helper.from_array(result, name))
            zeros += int(np.count_nonzero(result == 0))
            total += result.size
        onnx.save(pruned, str(output))
        if not arrays:
            notes = [f"no float weight initializers feed {', '.join(self._op_types())}: nothing pruned"]
        else:
            notes = [
                f"pruned {len(arrays)} weight tensor(s) ({c.scope}): {zeros:,} of {total:,} weights are zero "
                f"({zeros / total:.1%}); size on disk is unchanged, zstd size shrinks; no CPU speed-up"
            ]
        return notes + exclusion_notes(excluded, unmatched)

    def _op_types(self) -> list[str]:
        return [*self.config.op_types, *(["Gather"] if self.config.include_embeddings else [])]

    def _weights(self, model: onnx.ModelProto, *, excluded: set[str]) -> dict[str, onnx.TensorProto]:
        """The float initializers that are weights of the chosen ops, each once even if shared."""
        initializers = {i.name: i for i in model.graph.initializer}
        floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
        found: dict[str, onnx.TensorProto] = {}
        for node in model.graph.node:
            if node.op_type not in self._op_types() or node.name in excluded:
                continue
            for index in _WEIGHT_INPUTS[node.op_type]:
                init = initializers.get(node.input[index]) if index < len(node.input) else None
                if init is not None and init.data_type in floats and len(init.dims) >= 2:
                    found[init.name] = init
                    break
        return found


def _smallest(magnitudes: np.ndarray, sparsity: float) -> np.ndarray:
    """A mask of the `sparsity` fraction of smallest values (exactly floor(sparsity * n) of them)."""
    k = int(sparsity * magnitudes.size)
    mask = np.zeros(magnitudes.size, dtype=bool)
    if k > 0:
        mask[np.argpartition(magnitudes, k - 1)[:k]] = True
    return mask


def _global_masks(arrays: dict[str, np.ndarray], sparsity: float) -> dict[str, np.ndarray]:
    """Masks that zero the smallest `sparsity` fraction of all weights together."""
    if not arrays:
        return {}
    flat = np.concatenate([np.abs(a).astype(np.float32).ravel() for a in arrays.values()])
    mask = _smallest(flat, sparsity)
    masks, start = {}, 0
    for name, array in arrays.items():
        masks[name] = mask[start : start + array.size].reshape(array.shape)
        start += array.size
    return masks
