"""INT8 static quantization in QDQ format, with activation ranges calibrated on the evaluation set.

Unlike dynamic quantization, activation scales are fixed ahead of time from calibration data, so
inference skips computing them, and onnxruntime fuses each QuantizeLinear/DequantizeLinear pair around a
MatMul into an integer kernel. The calibration method decides how outliers are treated: MinMax keeps
them (wide range, coarse steps), Percentile clips the tail, Entropy picks the range that loses the
least information. A range that is wrong for inputs unlike the calibration data hurts more than
dynamic quantization would.

Calibration uses the first `calibration_samples` rows of the model's evaluation set, which the
evaluation then also scores: fidelity on those rows is optimistic. Keep `calibration_samples` well
below the evaluation set's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import onnx
from pydantic import Field, field_validator

from services.optimizer.passes.base import (
    OptimizationPass,
    PassConfig,
    PassContext,
    exclusion_notes,
    op_changes,
    resolve_nodes,
)

# The operator types onnxruntime's QDQ quantizer knows (onnxruntime.quantization.registry.QDQRegistry),
# listed here so a recipe can be validated without importing onnxruntime.
QDQ_OP_TYPES = frozenset(
    {
        "AveragePool",
        "BatchNormalization",
        "Clip",
        "Conv",
        "ConvTranspose",
        "CumSum",
        "Flatten",
        "Gather",
        "GatherElements",
        "Gemm",
        "InstanceNormalization",
        "LayerNormalization",
        "MatMul",
        "MaxPool",
        "Pad",
        "Relu",
        "Reshape",
        "Resize",
        "Slice",
        "Split",
        "Squeeze",
        "TopK",
        "Transpose",
        "Unsqueeze",
        "Where",
    }
)


class OnnxStaticQuantizationConfig(PassConfig):
    """onnxruntime.quantization.quantize_static in QDQ format, and how to calibrate it."""

    calibration_method: Literal["MinMax", "Entropy", "Percentile"] = Field(
        default="MinMax", description="how activation ranges are chosen from the calibration data"
    )
    calibration_samples: int = Field(default=128, ge=1, description="rows of the evaluation set to calibrate on")
    calibration_batch_size: int = Field(
        default=16, ge=1, description="rows per calibration run (1 if the model's batch dimension is fixed)"
    )
    percentile: float = Field(
        default=99.999, gt=50.0, le=100.0, description="Percentile method: the share of values the range keeps"
    )
    moving_average: bool = Field(
        default=False, description="MinMax method: average per-batch ranges instead of taking the extremes"
    )
    per_channel: bool = Field(default=False, description="one weight scale per output channel")
    reduce_range: bool = Field(default=False, description="7-bit weights, for CPUs without VNNI")
    activation_type: Literal["qint8", "quint8"] = Field(default="quint8", description="activation storage type")
    weight_type: Literal["qint8", "quint8"] = Field(default="qint8", description="weight storage type")
    activation_symmetric: bool = Field(default=False, description="symmetric activation ranges (zero point 0)")
    weight_symmetric: bool = Field(default=True, description="symmetric weight ranges")
    op_types_to_quantize: tuple[str, ...] = Field(
        default=("MatMul", "Gather"),
        min_length=1,
        description="operator types to quantize (onnxruntime QDQ operators, e.g. MatMul, Gather, Gemm, Conv)",
    )
    nodes_to_exclude: tuple[str, ...] = Field(default=(), description="node names or fnmatch globs to keep in float")

    @field_validator("op_types_to_quantize")
    @classmethod
    def _known_op_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if unknown := sorted(set(value) - QDQ_OP_TYPES):
            raise ValueError(f"not QDQ-quantizable: {', '.join(unknown)}; known: {', '.join(sorted(QDQ_OP_TYPES))}")
        return value


class _EvalSetReader:
    """Feeds calibration batches to onnxruntime; a CalibrationDataReader by its `get_next` method."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self._batches = batches
        self._iter: Iterator[dict[str, np.ndarray]] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._batches)


class OnnxStaticQuantization(OptimizationPass[OnnxStaticQuantizationConfig]):
    """onnxruntime's quantize_static, QDQ format, calibrated on the context's evaluation set."""

    name: ClassVar[str] = "OnnxStaticQuantization"
    Config: ClassVar[type[PassConfig]] = OnnxStaticQuantizationConfig

    def _run(self, model: onnx.ModelProto, *, source: Path, output: Path, context: PassContext) -> list[str]:
        c = self.config
        batches, rows = self._calibration_batches(model, context)
        excluded, unmatched = resolve_nodes(model, c.nodes_to_exclude)
        with self.third_party("onnxruntime.quantization.quantize_static"):
            from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

            types = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}
            extra: dict[str, object] = {
                "ActivationSymmetric": c.activation_symmetric,
                "WeightSymmetric": c.weight_symmetric,
            }
            if c.calibration_method == "Percentile":
                extra["CalibPercentile"] = c.percentile
            if c.calibration_method == "MinMax" and c.moving_average:
                extra["CalibMovingAverage"] = True
            quantize_static(
                source,
                output,
                _EvalSetReader(batches),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(c.op_types_to_quantize),
                per_channel=c.per_channel,
                reduce_range=c.reduce_range,
                activation_type=types[c.activation_type],
                weight_type=types[c.weight_type],
                nodes_to_exclude=excluded,
                calibrate_method=getattr(CalibrationMethod, c.calibration_method),
                extra_options=extra,
            )
        after = onnx.load(str(output), load_external_data=False)
        notes = [
            f"{c.calibration_method} calibration on the first {rows} rows of the evaluation set "
            "(the evaluation scores them too, so fidelity on them is optimistic)",
            op_changes(model, after),
        ]
        return notes + exclusion_notes(excluded, unmatched)

    def _calibration_batches(
        self, model: onnx.ModelProto, context: PassContext
    ) -> tuple[list[dict[str, np.ndarray]], int]:
        arrays, rows = self.calibration_arrays(
            model, context, samples=self.config.calibration_samples, purpose="for calibration"
        )
        size = self.config.calibration_batch_size
        batches = [
            {name: np.ascontiguousarray(array[start : start + size]) for name, array in arrays.items()}
            for start in range(0, rows, size)
        ]
        return batches, rows
