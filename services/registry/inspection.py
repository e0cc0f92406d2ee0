"""Reading and validating ONNX files and evaluation sets: what the registry trusts, it reads itself.

Checks, in order, each failing with a message that names the problem: the size fits a
single-file ONNX model (protobuf's 2 GiB limit); the bytes parse as a ModelProto with a graph;
no weights live in external files (an artifact must be one self-contained blob); onnx.checker
passes with full shape inference; onnxruntime can load it on the CPU; what the registry records
of it fits the record's caps (`shared.messages.registry`: inputs, outputs, operator types, names).

An evaluation set is measured from its headers before it is loaded (`npz.py`), so a small archive
that inflates to GiBs is refused without being inflated.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError
from onnx import TensorProto
from pydantic import ValidationError

from services.registry import npz
from services.registry.errors import InvalidEvalSet, InvalidModel
from services.registry.integrity import describe as describe_errors
from services.registry.settings import DEFAULT_EVAL_SET_DECOMPRESSED_BYTES
from shared.messages.registry import MAX_EVAL_SET_ARRAYS, MAX_MODEL_BYTES, EvalSet, OnnxInfo, TensorSpec

MAX_EVAL_SET_BYTES = 512 * 1024**2  # the file as uploaded (compressed); see npz.py for what it inflates to
_NOT_SAFE = re.compile(r"[^ !#-\[\]-~]")

_NP_DTYPES = {
    "float": "float32",
    "float16": "float16",
    "double": "float64",
    "int64": "int64",
    "int32": "int32",
    "int8": "int8",
    "uint8": "uint8",
    "bool": "bool",
}


def inspect_model(path: Path) -> OnnxInfo:
    """Validate the ONNX file at `path` and describe it.

    Raises:
        InvalidModel: with the first problem found.
    """
    size = path.stat().st_size
    if size == 0:
        raise InvalidModel("the file is empty")
    if size > MAX_MODEL_BYTES:
        raise InvalidModel(f"the file is {size} bytes; single-file ONNX models are limited to 2 GiB by protobuf")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise InvalidModel(f"not an ONNX model: the protobuf does not parse ({_short(exc)})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise InvalidModel("not an ONNX model: no graph with nodes (is the file truncated or another format?)")
    if model.ir_version <= 0 or not model.opset_import:
        raise InvalidModel("not an ONNX model: ir_version or opset_import is missing")
    external = [t.name for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    if external:
        raise InvalidModel(
            f"weights are stored in external data files ({', '.join(external[:3])}...); "
            "register a single self-contained .onnx file"
        )
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise InvalidModel(f"onnx.checker rejects the model: {_short(exc)}") from None
    try:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped exceptions for any load failure
        raise InvalidModel(f"onnxruntime {ort.__version__} cannot load the model: {_short(exc)}") from None
    return describe(model)


def describe(model: onnx.ModelProto) -> OnnxInfo:
    """The metadata the registry records; reads only the protobuf.

    Raises:
        InvalidModel: the model is beyond what a record holds (too many inputs, outputs or operator
            types, names too long or not printable ASCII), naming the field.
    """
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    parameters = sum(int(np.prod(t.dims, dtype=np.int64)) for t in graph.initializer)
    op_types = sorted({n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in graph.node})
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p)
    try:
        return OnnxInfo(
            ir_version=model.ir_version,
            opsets={(o.domain or ""): o.version for o in model.opset_import},
            producer=_NOT_SAFE.sub("?", producer)[:128],  # informational: kept readable, never refused
            inputs=[_tensor_spec(v) for v in graph.input if v.name not in weights],
            outputs=[_tensor_spec(v) for v in graph.output],
            parameters=parameters,
            op_types=op_types,
        )
    except ValidationError as exc:
        raise InvalidModel(f"the model is beyond what the registry records: {describe_errors(exc)}") from None


def inspect_eval_set(
    path: Path,
    *,
    digest: str,
    key: str,
    inputs: list[TensorSpec],
    max_decompressed_bytes: int = DEFAULT_EVAL_SET_DECOMPRESSED_BYTES,
) -> EvalSet:
    """Validate an evaluation set against the model's inputs.

    The format is a NumPy `.npz` with one array per model input (same name, dtype and rank, the
    first axis indexing samples); extra arrays (labels, say) are kept for task metrics. Its size
    once loaded is measured from its headers first (`npz.measure`), and nothing is inflated if it
    is over `max_decompressed_bytes`.

    Raises:
        InvalidEvalSet: with the first problem found.
    """
    size = path.stat().st_size
    if size > MAX_EVAL_SET_BYTES:
        raise InvalidEvalSet(f"the evaluation set is {size} bytes; the limit is {MAX_EVAL_SET_BYTES}")
    npz.measure(path, max_members=MAX_EVAL_SET_ARRAYS, max_bytes=max_decompressed_bytes)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise InvalidEvalSet(f"not a NumPy .npz archive: {_short(exc)}") from None
    if not arrays:
        raise InvalidEvalSet("the evaluation set holds no arrays")
    missing = [i.name for i in inputs if i.name not in arrays]
    if missing:
        raise InvalidEvalSet(f"the evaluation set lacks arrays for model inputs {missing}; it has {sorted(arrays)}")
    samples = {a.shape[0] if a.ndim else 0 for a in arrays.values()}
    if len(samples) != 1 or 0 in samples:
        shapes = {n: list(a.shape) for n, a in arrays.items()}
        raise InvalidEvalSet(f"arrays must share a non-empty first (sample) axis; shapes are {shapes}")
    for spec in inputs:
        arr = arrays[spec.name]
        want = _NP_DTYPES.get(spec.dtype)
        if want is not None and str(arr.dtype) != want:
            raise InvalidEvalSet(f"array {spec.name!r} is {arr.dtype}; the model input wants {want}")
        if spec.shape and arr.ndim != len(spec.shape):
            raise InvalidEvalSet(f"array {spec.name!r} has rank {arr.ndim}; the model input has rank {len(spec.shape)}")
    try:
        return EvalSet(
            digest=digest,
            size_bytes=size,
            key=key,
            samples=samples.pop(),
            arrays={n: [int(d) for d in a.shape] for n, a in arrays.items()},
        )
    except ValidationError as exc:
        problem = describe_errors(exc)
        raise InvalidEvalSet(f"the evaluation set is beyond what the registry records: {problem}") from None


def _tensor_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    shape: list[int | str | None] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            shape.append(dim.dim_param)
        else:
            shape.append(None)
    dtype = TensorProto.DataType.Name(tensor.elem_type).lower() if tensor.elem_type else "unknown"
    return TensorSpec(name=value.name, dtype=dtype, shape=shape)


def _short(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
