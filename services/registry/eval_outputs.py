"""An artifact's outputs on its version's evaluation set, described as devices describe theirs.

The telemetry service scores drift against a reference; the best one is what the model produced on
the data it was validated on, and the registry is the one place that holds both the signed bytes and
that data. So at registration it runs the artifact over the first `MAX_EVAL_OUTPUT_ROWS` rows of the
evaluation set, one row per run (a batch of 1, as a device serves a request), and keeps the moments of
the first output that devices report (`shared.output_statistics`): the same definition on both sides,
so the two are comparable by construction.

A version's evaluation set already matches its inputs (`inspection.inspect_eval_set`); a variant is
run on its version's set with floating inputs converted to the variant's type (an FP16 variant takes
float16). A model that fails on it, or answers NaN for every row, is refused with the row and the
reason: a variant that cannot take its version's inputs is not a drop-in for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from services.registry.errors import InvalidEvalSet
from shared.messages.registry import MAX_EVAL_OUTPUT_ROWS, EvalOutputs
from shared.output_statistics import Moments, output_moments, wire_outputs

_FLOAT_INPUTS = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def measure_eval_outputs(model: Path, eval_set: Path, *, max_rows: int = MAX_EVAL_OUTPUT_ROWS) -> EvalOutputs | None:
    """The moments of `model`'s first output over the first `max_rows` rows of `eval_set`.

    None when the first output is not floating point (token ids, labels): there are no moments of it
    that a device reports either.

    Raises:
        InvalidEvalSet: onnxruntime fails on a row, an input has no array, or every row's output is
            NaN or infinite (the message says which; the caller says whose fault it is).
    """
    session = _session(model)
    inputs = session.get_inputs()
    first = session.get_outputs()[0]
    with np.load(eval_set, allow_pickle=False) as archive:
        if missing := [i.name for i in inputs if i.name not in archive.files]:
            raise InvalidEvalSet(f"the evaluation set has no array for input(s) {', '.join(missing)}")
        arrays = {i.name: archive[i.name] for i in inputs}
    rows = min(max_rows, *(len(a) for a in arrays.values()))
    norms, values = Moments(), Moments()
    for row in range(rows):
        feed = {i.name: _as_input(arrays[i.name][row : row + 1], i.type) for i in inputs}
        try:
            output = np.asarray(session.run([first.name], feed)[0])
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors (Fail, InvalidArgument...) are one kind here
            raise InvalidEvalSet(f"onnxruntime failed on evaluation row {row}: {_first_line(exc)}") from None
        if not np.issubdtype(output.dtype, np.floating):
            return None
        row_norms, row_values = output_moments(output)
        norms.merge(row_norms)
        values.merge(row_values)
    outputs = wire_outputs(norms, values)
    if not outputs:
        raise InvalidEvalSet(f"output {first.name!r} is NaN or infinite on all {rows} evaluation rows")
    return EvalOutputs(rows=rows, output=first.name, outputs=outputs)


def _as_input(array: np.ndarray, onnx_type: str) -> np.ndarray:
    wanted = _FLOAT_INPUTS.get(onnx_type)
    if wanted is not None and np.issubdtype(array.dtype, np.floating):
        return np.ascontiguousarray(array, dtype=wanted)
    return np.ascontiguousarray(array)


def _session(model: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the same moments on every run: reductions split the same way
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - inspection loaded it already; report rather than crash
        raise InvalidEvalSet(f"onnxruntime cannot load the model: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
