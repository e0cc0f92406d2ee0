"""FP16 conversion: float32 weights and activations become float16.

What it buys: half the size with almost no fidelity loss, and speed on hardware with fast float16
(GPUs, NPUs, recent ARM cores). What it does not buy: speed on an x86 CPU, where onnxruntime has few
float16 kernels and computes the rest through inserted Casts, so an FP16 variant is usually slower
there than FP32; the evaluation measures it, so a profile's latency budget decides.

`keep_io_types` keeps the model's float inputs and outputs in float32 (Casts at the edges), so callers
and the evaluation feed and read the same types as for the base model.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import onnx
from pydantic import Field

from services.optimizer.passes.base import (
    OptimizationPass,
    PassConfig,
    PassContext,
    exclusion_notes,
    op_changes,
    resolve_nodes,
)


class Float16ConversionConfig(PassConfig):
    """onnxruntime.transformers.float16.convert_float_to_float16's knobs."""

    keep_io_types: bool = Field(default=True, description="keep float inputs and outputs in float32")
    op_block_list: tuple[str, ...] | None = Field(
        default=None,
        description="op types to keep in float32; None = onnxruntime's default list (ML ops, Range, TopK, "
        "CumSum, Min, Max, ...); a list replaces that default",
    )
    node_block_list: tuple[str, ...] = Field(
        default=(), description="node names or fnmatch globs to keep in float32 (e.g. a numerically fragile norm)"
    )


class Float16Conversion(OptimizationPass[Float16ConversionConfig]):
    """Convert float32 tensors to float16, except blocked ops and nodes."""

    name: ClassVar[str] = "Float16Conversion"
    Config: ClassVar[type[PassConfig]] = Float16ConversionConfig

    def _run(self, model: onnx.ModelProto, *, source: Path, output: Path, context: PassContext) -> list[str]:
        c = self.config
        blocked, unmatched = resolve_nodes(model, c.node_block_list)
        with self.third_party("onnxruntime.transformers.float16.convert_float_to_float16"):
            from onnxruntime.transformers.float16 import convert_float_to_float16
            from onnxruntime.transformers.onnx_model import OnnxModel

            converted = convert_float_to_float16(
                str(source),
                keep_io_types=c.keep_io_types,
                op_block_list=list(c.op_block_list) if c.op_block_list is not None else None,
                node_block_list=blocked or None,
            )
            # The converter appends the Casts it inserts at the end of the node list; onnx.checker (and so
            # the next pass) requires topological order.
            OnnxModel(converted).topological_sort()
            onnx.save(converted, str(output))
        io = "float32 inputs/outputs kept" if c.keep_io_types else "inputs/outputs converted to float16"
        notes = [f"float16 weights and activations, {io}; {op_changes(model, converted)}"]
        return notes + exclusion_notes(blocked, unmatched)
