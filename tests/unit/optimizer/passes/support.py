"""Helpers the pass tests share: run one pass by type, read an output's operators and values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from services.optimizer.passes import PassContext, PassResult, build_pass
from shared.messages.optimizer import PassSpec


def run(pass_type: str, source: Path, output: Path, context: PassContext, **config: object) -> PassResult:
    return build_pass(PassSpec(type=pass_type, config=config)).run(source, output, context=context)


def ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def outputs(path: Path, eval_set: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: eval_set[i.name] for i in session.get_inputs()}
    return np.asarray(session.run(None, feed)[0])
