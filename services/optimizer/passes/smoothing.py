"""SmoothQuant-style activation smoothing: move activation outliers into the weights before INT8.

Why: INT8 dynamic quantization gives each activation tensor one scale, so a few input channels with
large values (transformers have them after LayerNorm and GELU) set a coarse step for all the others.
For a MatMul Y = X·W with constant W, dividing input channel k of X by s_k and multiplying row k of W by
s_k leaves Y unchanged in exact arithmetic, and with s_k = max|X_k|^α / max|W_k|^(1-α) (Xiao et al.,
"SmoothQuant", 2022) the activation range flattens while the weights, quantized per output channel,
absorb the difference. This pass only rescales; follow it with OnnxDynamicQuantization (per_channel).

How: max|X_k| is measured by running the model on the first `calibration_samples` rows of the
evaluation set (which the evaluation also scores: fidelity there is slightly optimistic). MatMuls that
share an input (a layer's query, key and value) share one set of factors. 1/s is applied by a new Mul
node in front of them rather than folded into the producer, because the producer's output usually feeds
other nodes too (the residual connection); the Mul costs a few microseconds per inference. The output is
a plain float model with standard operators only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
from onnx import helper, numpy_helper
from pydantic import Field

from services.optimizer.passes.base import OptimizationPass, PassConfig, PassContext, exclusion_notes, resolve_nodes

# Factors are kept in this range so a dead channel (max 0) or a tiny weight row cannot blow up a weight.
_MIN_FACTOR, _MAX_FACTOR = 1e-2, 1e2


class ActivationSmoothingConfig(PassConfig):
    """How strongly to migrate activation range into the weights, and what to calibrate on."""

    alpha: float = Field(
        default=0.7,
        ge=0.0,
        le=1.0,
        description="migration strength: 0 = leave activations, 1 = flatten them fully (SmoothQuant's 0.5 suits "
        "static INT8; before dynamic INT8 on MiniLM, 0.6-0.7 measured best)",
    )
    calibration_samples: int = Field(default=128, ge=1, description="rows of the evaluation set to measure on")
    calibration_batch_size: int = Field(default=16, ge=1, description="rows per measuring run")
    nodes_to_exclude: tuple[str, ...] = Field(default=(), description="MatMul names or fnmatch globs to leave alone")


@dataclass(frozen=True)
class _Group:
    """MatMuls that read the same activation tensor, with their constant weights."""

    activation: str
    matmuls: list[onnx.NodeProto]
    weights: list[str]


class ActivationSmoothing(OptimizationPass[ActivationSmoothingConfig]):
    """Rescale MatMul inputs and weights so INT8 activation quantization loses less (SmoothQuant)."""

    name: ClassVar[str] = "ActivationSmoothing"
    Config: ClassVar[type[PassConfig]] = ActivationSmoothingConfig

    def _run(self, model: onnx.ModelProto, *, source: Path, output: Path, context: PassContext) -> list[str]:
        c = self.config
        smoothed = onnx.ModelProto()
        smoothed.CopyFrom(model)
        excluded, unmatched = resolve_nodes(smoothed, c.nodes_to_exclude)
        groups = _groups(smoothed, excluded=set(excluded))
        maxima, rows = self._activation_maxima(smoothed, source, [g.activation for g in groups], context)
        initializers = {i.name: i for i in smoothed.graph.initializer}
        for index, group in enumerate(groups):
            weights = [numpy_helper.to_array(initializers[w]) for w in group.weights]
            weight_max = np.max(np.stack([np.abs(w).max(axis=1) for w in weights]), axis=0)
            act_max = maxima[group.activation]
            factors = np.where(
                (act_max > 0) & (weight_max > 0),
                act_max ** np.float64(c.alpha) / np.maximum(weight_max, 1e-12) ** np.float64(1 - c.alpha),
                1.0,
            )
            factors = np.clip(factors, _MIN_FACTOR, _MAX_FACTOR)
            for name, weight in zip(group.weights, weights, strict=True):
                scaled = (weight.astype(np.float64) * factors[:, None]).astype(weight.dtype)
                initializers[name].CopyFrom(numpy_helper.from_array(scaled, name))
            inverse = f"{group.activation}.smooth_inverse.{index}"
            scaled_input = f"{group.activation}.smoothed.{index}"
            smoothed.graph.initializer.append(numpy_helper.from_array((1.0 / factors).astype(np.float32), inverse))
            mul = helper.make_node("Mul", [group.activation, inverse], [scaled_input], name=f"{scaled_input}.Mul")
            for node in group.matmuls:
                node.input[0] = scaled_input
            position = min(list(smoothed.graph.node).index(n) for n in group.matmuls)
            smoothed.graph.node.insert(position, mul)
        onnx.save(smoothed, str(output))
        notes = [
            f"alpha {c.alpha}: smoothed the inputs of {sum(len(g.matmuls) for g in groups)} MatMul(s) in "
            f"{len(groups)} group(s), measured on the first {rows} rows of the evaluation set"
        ]
        return notes + exclusion_notes(excluded, unmatched)

    def _activation_maxima(
        self, model: onnx.ModelProto, source: Path, activations: list[str], context: PassContext
    ) -> tuple[dict[str, np.ndarray], int]:
        """max |x| per input channel (last axis) of each activation, and the calibration rows used."""
        arrays, rows = self.calibration_arrays(
            model, context, samples=self.config.calibration_samples, purpose="to measure activations"
        )
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        known_outputs = {o.name for o in probe.graph.output}
        for name in activations:
            if name not in known_outputs:
                probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        maxima: dict[str, np.ndarray] = {}
        with self.third_party("onnxruntime (measuring activations)"):
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3
            session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
            for start in range(0, rows, self.config.calibration_batch_size):
                stop = min(start + self.config.calibration_batch_size, rows)
                feed = {name: array[start:stop] for name, array in arrays.items()}
                values = session.run(activations, feed)
                for name, value in zip(activations, values, strict=True):
                    channel_max = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0).astype(np.float64)
                    maxima[name] = np.maximum(maxima[name], channel_max) if name in maxima else channel_max
        return maxima, rows


def _groups(model: onnx.ModelProto, *, excluded: set[str]) -> list[_Group]:
    """MatMuls with a constant 2-D float32 weight as input B, grouped by their input A."""
    initializers = {i.name: i for i in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    by_activation: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.name in excluded or node.domain not in ("", "ai.onnx"):
            continue
        weight = initializers.get(node.input[1])
        if weight is None or weight.data_type != onnx.TensorProto.FLOAT or len(weight.dims) != 2:
            continue
        if node.input[0] in initializers or uses.get(node.input[1], 0) != 1:
            continue  # a constant A, or a weight other nodes also read (rescaling it would change them)
        by_activation.setdefault(node.input[0], []).append(node)
    return [
        _Group(activation=a, matmuls=nodes, weights=[n.input[1] for n in nodes]) for a, nodes in by_activation.items()
    ]
