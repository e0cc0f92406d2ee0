"""INT8 dynamic quantization: weights stored as int8, activations quantized on the fly per inference.

What it buys: about 4x smaller weights and, on CPUs with integer dot-product instructions (AVX2/VNNI,
ARM dot-product), faster MatMuls; no calibration data needed. What it costs: every activation feeding a
quantized MatMul is quantized to uint8 with one scale for the whole tensor, so layers with activation
outliers (a transformer's FFN output) lose the most, and per-tensor weight scales add to it. Per-channel
weights and excluding the few most sensitive MatMuls are the usual repairs; measure which nodes those are.

A quantized Gather (the embedding table) is dequantized after the lookup: it buys size, not speed.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import onnx
from pydantic import Field

from services.optimizer.passes.base import (
    OptimizationPass,
    PassConfig,
    PassContext,
    contrib_ops,
    exclusion_notes,
    op_changes,
    select_nodes,
)

_ELEMENT_TYPES = {"float": onnx.TensorProto.FLOAT, "float16": onnx.TensorProto.FLOAT16}
DynamicOpType = Literal["MatMul", "Gather", "Conv", "Attention", "LSTM", "EmbedLayerNormalization"]


class DynamicQuantizationOptions(PassConfig):
    """A few of quantize_dynamic's `extra_options`, under onnxruntime's own key names; None = its default."""

    MatMulConstBOnly: bool | None = Field(
        default=None, description="quantize only MatMuls whose B is a constant weight (onnxruntime's default: true)"
    )
    WeightSymmetric: bool | None = Field(
        default=None, description="symmetric weight ranges (default: true for int8 weights, false for uint8)"
    )
    ActivationSymmetric: bool | None = Field(default=None, description="symmetric activation ranges (default false)")
    EnableSubgraph: bool | None = Field(default=None, description="also quantize If/Loop subgraphs (default false)")
    ForceQuantizeNoInputCheck: bool | None = Field(
        default=None, description="quantize ops like Gather even when their input is not quantized (default false)"
    )
    DefaultTensorType: Literal["float", "float16"] | None = Field(
        default=None,
        description="element type assumed where onnx shape inference cannot tell, i.e. after contrib ops; None = "
        "float when the input has contrib ops (e.g. after Int4WeightOnlyQuantization of the Gather), else unset",
    )

    def to_ort(self, *, has_contrib_ops: bool) -> dict[str, object]:
        """The options that were set, as onnxruntime's `extra_options` dict."""
        set_options = self.model_dump(exclude={"DefaultTensorType"}).items()
        options: dict[str, object] = {k: v for k, v in set_options if v is not None}
        element_type = self.DefaultTensorType or ("float" if has_contrib_ops else None)
        if element_type is not None:
            options["DefaultTensorType"] = _ELEMENT_TYPES[element_type]
        return options


class OnnxDynamicQuantizationConfig(PassConfig):
    """onnxruntime.quantization.quantize_dynamic's knobs that matter for accuracy and size."""

    per_channel: bool = Field(
        default=False, description="one scale per output channel of each weight instead of one per tensor"
    )
    reduce_range: bool = Field(
        default=False, description="7-bit weights, to avoid int16 overflow on CPUs without VNNI (costs accuracy)"
    )
    weight_type: Literal["qint8", "quint8"] = Field(default="qint8", description="storage type of the weights")
    op_types_to_quantize: tuple[DynamicOpType, ...] = Field(
        default=("MatMul", "Gather"),
        min_length=1,
        description="operator types to quantize; Gather quantizes embedding tables (size only)",
    )
    nodes_to_quantize: tuple[str, ...] = Field(
        default=(), description="if set, quantize only nodes matching these names or fnmatch globs"
    )
    nodes_to_exclude: tuple[str, ...] = Field(
        default=(), description="node names or fnmatch globs to leave in float (e.g. 'layer.*.output.MatMul')"
    )
    extra_options: DynamicQuantizationOptions = Field(
        default_factory=DynamicQuantizationOptions, description="passed through to quantize_dynamic's extra_options"
    )


class OnnxDynamicQuantization(OptimizationPass[OnnxDynamicQuantizationConfig]):
    """onnxruntime's quantize_dynamic (QOperator format: MatMulInteger / DynamicQuantizeLinear)."""

    name: ClassVar[str] = "OnnxDynamicQuantization"
    Config: ClassVar[type[PassConfig]] = OnnxDynamicQuantizationConfig

    def _run(self, model: onnx.ModelProto, *, source: Path, output: Path, context: PassContext) -> list[str]:
        c = self.config
        excluded, unmatched = select_nodes(
            model, op_types=c.op_types_to_quantize, include=c.nodes_to_quantize, exclude=c.nodes_to_exclude
        )
        with self.third_party("onnxruntime.quantization.quantize_dynamic"):
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(
                source,
                output,
                op_types_to_quantize=list(c.op_types_to_quantize),
                per_channel=c.per_channel,
                reduce_range=c.reduce_range,
                weight_type=QuantType.QInt8 if c.weight_type == "qint8" else QuantType.QUInt8,
                nodes_to_exclude=excluded,
                extra_options=c.extra_options.to_ort(has_contrib_ops=bool(contrib_ops(model))),
            )
        after = onnx.load(str(output), load_external_data=False)
        granularity = "per-channel" if c.per_channel else "per-tensor"
        notes = [f"{c.weight_type} {granularity} weights; {op_changes(model, after)}"]
        return notes + exclusion_notes(excluded, unmatched)
