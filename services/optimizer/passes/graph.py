"""onnxruntime's graph optimizations, applied offline and saved as a new model.

onnxruntime already applies these when it creates a session, so this pass buys load time on the
device, not inference speed — unless the device's runtime is configured with optimizations off. It is
also a way to let later passes see fused operators. The level matters for portability:

- basic: constant folding, redundant node elimination, semantics-preserving fusions; standard ops only.
- extended: also fusions into com.microsoft contrib ops (FusedMatMul, Gelu, SkipLayerNormalization,
  Attention...), so the variant needs an onnxruntime that has them, and quantizers may not recognise them.
- all: also layout transformations chosen for this host's CPU (e.g. NCHWc); the saved model may run worse,
  or not at all, on a different CPU. onnxruntime itself warns against saving it.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import onnx
from pydantic import Field

from services.optimizer.passes.base import OptimizationPass, PassConfig, PassContext, op_counts


class OrtGraphOptimizationConfig(PassConfig):
    """Which onnxruntime graph optimization level to apply and save."""

    level: Literal["basic", "extended", "all"] = Field(
        default="basic",
        description="basic keeps standard ops; extended may emit com.microsoft fused ops; all adds "
        "host-CPU-specific layout changes (not portable)",
    )


class OrtGraphOptimization(OptimizationPass[OrtGraphOptimizationConfig]):
    """Run onnxruntime's graph optimizer at `level` and save the optimized graph."""

    name: ClassVar[str] = "OrtGraphOptimization"
    Config: ClassVar[type[PassConfig]] = OrtGraphOptimizationConfig

    def _run(self, model: onnx.ModelProto, *, source: Path, output: Path, context: PassContext) -> list[str]:
        with self.third_party("onnxruntime graph optimization"):
            import onnxruntime as ort

            levels = {
                "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            }
            options = ort.SessionOptions()
            options.graph_optimization_level = levels[self.config.level]
            options.optimized_model_filepath = str(output)
            options.log_severity_level = 3
            ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        before = len(model.graph.node)
        after = onnx.load(str(output), load_external_data=False)
        notes = [f"level {self.config.level}: {before} nodes -> {len(after.graph.node)}"]
        fused = sorted(op for op in op_counts(after) if op not in op_counts(model))
        if fused:
            notes.append(f"new operator types: {', '.join(fused)}")
        if self.config.level == "all":
            notes.append("level all may bake in layout choices for this host's CPU; prefer extended for devices")
        return notes
