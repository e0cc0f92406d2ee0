"""INT4 weight-only block quantization: MatMul → MatMulNBits, embedding Gather → GatherBlockQuantized.

Each block of `block_size` consecutive weights along the quantized axis gets its own scale (and a zero
point unless symmetric), so an outlier only coarsens its own block; that is why 4 bits per weight can
keep an embedding table almost intact. Size is about 1/8 of float32 plus the scales (4 bytes per block).
Activations stay in float unless `accuracy_level` 4 lets the MatMulNBits kernel quantize them to int8
per block, which is faster on CPUs with integer dot products and costs a little fidelity.

The output uses com.microsoft contrib operators (onnxruntime >= 1.17 for MatMulNBits, >= 1.20 for
GatherBlockQuantized), and quantizing a Gather raises the model to opset 21 and IR version 10 (int4
tensors); both are reported so a device's runtime can be checked. Needs the `onnx-ir` package, which
onnxruntime's quantizer imports.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import ClassVar, Literal

import onnx
from pydantic import Field, field_validator

from services.optimizer.passes.base import (
    OptimizationPass,
    PassConfig,
    PassContext,
    exclusion_notes,
    op_changes,
    select_nodes,
)

WeightOnlyOp = Literal["MatMul", "Gather"]
_DEFAULT_AXES: dict[WeightOnlyOp, int] = {"MatMul": 0, "Gather": 1}


class Int4WeightOnlyQuantizationConfig(PassConfig):
    """onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer's knobs, 4 bits, QOperator format."""

    block_size: int = Field(
        default=32, ge=16, le=256, description="weights per scale; a power of two from 16 to 256 (smaller = finer)"
    )
    is_symmetric: bool = Field(
        default=True, description="symmetric blocks (no zero points: smaller); asymmetric fits skewed blocks better"
    )
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = Field(
        default=None,
        description="MatMulNBits compute type: 4 = int8 activations (fastest on CPU), 1 = float32; None = "
        "onnxruntime's default",
    )
    op_types_to_quantize: tuple[WeightOnlyOp, ...] = Field(
        default=("MatMul",), min_length=1, description="MatMul and/or the embedding Gather"
    )
    quant_axes: dict[WeightOnlyOp, int] = Field(
        default_factory=lambda: _DEFAULT_AXES.copy(),
        description="axis each op's weight is blocked along: MatMul must be 0 (K); Gather 1 blocks each table row",
    )
    nodes_to_quantize: tuple[str, ...] = Field(
        default=(), description="if set, quantize only nodes matching these names or fnmatch globs"
    )
    nodes_to_exclude: tuple[str, ...] = Field(default=(), description="node names or fnmatch globs to keep in float")

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"must be a power of two, got {value}")
        return value

    @field_validator("quant_axes")
    @classmethod
    def _matmul_axis(cls, value: dict[WeightOnlyOp, int]) -> dict[WeightOnlyOp, int]:
        if value.get("MatMul", 0) != 0:
            raise ValueError("MatMulNBits blocks MatMul weights along axis 0 only")
        return value


class Int4WeightOnlyQuantization(OptimizationPass[Int4WeightOnlyQuantizationConfig]):
    """onnxruntime's MatMulNBitsQuantizer with 4-bit weights (the default RTN-style affine algorithm)."""

    name: ClassVar[str] = "Int4WeightOnlyQuantization"
    Config: ClassVar[type[PassConfig]] = Int4WeightOnlyQuantizationConfig

    def _run(self, model: onnx.ModelProto, *, source: Path, output: Path, context: PassContext) -> list[str]:
        c = self.config
        excluded, unmatched = select_nodes(
            model, op_types=c.op_types_to_quantize, include=c.nodes_to_quantize, exclude=c.nodes_to_exclude
        )
        with self.third_party("onnxruntime.quantization.matmul_nbits_quantizer"):
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            quantizer = MatMulNBitsQuantizer(
                copy.deepcopy(model),  # the quantizer edits the graph it is given in place
                bits=4,
                block_size=c.block_size,
                is_symmetric=c.is_symmetric,
                accuracy_level=c.accuracy_level,
                nodes_to_exclude=excluded,
                op_types_to_quantize=c.op_types_to_quantize,
                quant_axes=tuple(c.quant_axes.items()),
            )
            quantizer.process()
            quantizer.model.save_model_to_file(str(output))
        after = onnx.load(str(output), load_external_data=False)
        kind = "symmetric" if c.is_symmetric else "asymmetric"
        notes = [f"int4 {kind} blocks of {c.block_size}; {op_changes(model, after)}"]
        return notes + exclusion_notes(excluded, unmatched)
