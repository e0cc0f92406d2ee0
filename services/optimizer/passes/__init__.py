"""Optimization passes, one module per technique; importing this package registers all of them.

OrtGraphOptimization          graph.py         onnxruntime graph optimizations, saved offline
OnnxDynamicQuantization       dynamic_int8.py  INT8 weights, activations quantized at run time
OnnxStaticQuantization        static_int8.py   INT8 QDQ with activation ranges calibrated on the eval set
Int4WeightOnlyQuantization    int4.py          4-bit block weights: MatMulNBits, GatherBlockQuantized
Float16Conversion             fp16.py          float16 weights and activations
MagnitudePruning              pruning.py       zero the smallest weights (compressed size only)
ActivationSmoothing           smoothing.py     SmoothQuant rescaling of MatMul inputs before INT8
"""

from services.optimizer.passes.base import (
    OptimizationPass,
    PassConfig,
    PassContext,
    PassResult,
    build_pass,
    registered_passes,
)
from services.optimizer.passes.dynamic_int8 import OnnxDynamicQuantization, OnnxDynamicQuantizationConfig
from services.optimizer.passes.fp16 import Float16Conversion, Float16ConversionConfig
from services.optimizer.passes.graph import OrtGraphOptimization, OrtGraphOptimizationConfig
from services.optimizer.passes.int4 import Int4WeightOnlyQuantization, Int4WeightOnlyQuantizationConfig
from services.optimizer.passes.pruning import MagnitudePruning, MagnitudePruningConfig
from services.optimizer.passes.smoothing import ActivationSmoothing, ActivationSmoothingConfig
from services.optimizer.passes.static_int8 import OnnxStaticQuantization, OnnxStaticQuantizationConfig

__all__ = [
    "ActivationSmoothing",
    "ActivationSmoothingConfig",
    "Float16Conversion",
    "Float16ConversionConfig",
    "Int4WeightOnlyQuantization",
    "Int4WeightOnlyQuantizationConfig",
    "MagnitudePruning",
    "MagnitudePruningConfig",
    "OnnxDynamicQuantization",
    "OnnxDynamicQuantizationConfig",
    "OnnxStaticQuantization",
    "OnnxStaticQuantizationConfig",
    "OptimizationPass",
    "OrtGraphOptimization",
    "OrtGraphOptimizationConfig",
    "PassConfig",
    "PassContext",
    "PassResult",
    "build_pass",
    "registered_passes",
]
