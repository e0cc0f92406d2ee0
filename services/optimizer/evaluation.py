"""Measuring a candidate model on the base model's evaluation set: size, latency and fidelity.

Honest numbers need the same conditions for every candidate, so the rules are fixed here:

- Inference is one sample at a time (a batch of 1, each evaluation row once), as on an edge device, with
  sequential execution and a fixed number of intra-op threads; latency is wall time of `session.run`
  after a short warm-up, reported as p50/p95 in ms. Latency is only comparable within one host and run.
- Fidelity compares the candidate's outputs with the base model's on the same rows, computed in float64
  from sessions with one intra-op thread, so the same model and evaluation set always give the same
  numbers (multi-threaded kernels may split reductions differently from run to run).
- Each output is scored by its kind. Embedding-like outputs (2-D float, rows of unit norm, or a name
  containing "embedding"): mean and min cosine similarity. Logits (float, last axis of at least 2 that is
  not embedding-like): top-1 agreement and mean KL(base || candidate) of the softmax; and, when the
  evaluation set has a `labels` array, the task metric `accuracy`. Anything else: the max absolute
  difference. Kinds are inferred from the base model's outputs and can be overridden.
- The first output (or `primary_output`) gives the plain metric names budgets check (`cosine_mean`,
  `cosine_min`, `top1_agreement`, `kl`, `task_metric` with `accuracy`); other outputs are reported as
  `<output>.<metric>`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
import zstandard

from services.optimizer.errors import EvaluationError

OutputKind = Literal["embedding", "logits", "other"]

LABELS = "labels"
ZSTD_LEVEL = 3
WARMUP_RUNS = 5
# Rows whose L2 norm is within this of 1 make a 2-D output "embedding-like" (an L2-normalised embedding).
UNIT_NORM_TOLERANCE = 1e-3
_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


@dataclass(frozen=True, kw_only=True)
class Reference:
    """The base model's outputs on the evaluation set, computed once per search.

    Attributes:
        outputs: output name -> the base's output for every row, stacked on axis 0, as float64.
        kinds: output name -> how it is scored.
        primary: the output whose metrics budgets check.
        rows: how many evaluation rows were run.
        inputs: the model inputs fed from the evaluation set.
        task_metrics: the base model's own task metric (e.g. accuracy), when labels exist.
    """

    outputs: dict[str, np.ndarray]
    kinds: dict[str, OutputKind]
    primary: str
    rows: int
    inputs: tuple[str, ...]
    task_metrics: dict[str, float]


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """One model measured on this host.

    Attributes:
        size_bytes: the file's size on disk.
        compressed_size_bytes: its zstd (level 3) compressed size: what a download costs, what pruning buys.
        latency_p50_ms, latency_p95_ms: single-sample inference latency percentiles.
        threads: intra-op threads used for latency.
        latency_samples: how many timed runs the percentiles come from.
        fidelity: metric name -> value against the base (see the module docstring for the names).
    """

    size_bytes: int
    compressed_size_bytes: int
    latency_p50_ms: float
    latency_p95_ms: float
    threads: int
    latency_samples: int
    fidelity: dict[str, float]


def reference_outputs(
    base: Path,
    eval_set: Mapping[str, np.ndarray],
    *,
    output_kinds: Mapping[str, OutputKind] | None = None,
    primary_output: str | None = None,
) -> Reference:
    """Run the base model once over the evaluation set and decide how each output is scored.

    Args:
        base: the base ONNX model.
        eval_set: input name -> array with samples on axis 0; an optional `labels` array (class ids).
        output_kinds: override the inferred kind of some outputs.
        primary_output: the output budgets check; defaults to the model's first output.

    Raises:
        EvaluationError: the model does not load, the evaluation set does not fit its inputs, an output
            name is unknown, or the base produces non-finite values.
    """
    session = _session(base, threads=1)
    inputs, rows = _eval_inputs(session, eval_set)
    outputs, _ = _run_rows(session, eval_set, inputs, rows=rows, timed=False)
    names = [o.name for o in session.get_outputs()]
    overrides = dict(output_kinds or {})
    if unknown := sorted((set(overrides) | {primary_output or names[0]}) - set(names)):
        raise EvaluationError(f"{base.name} has no output(s) {', '.join(unknown)}; its outputs: {', '.join(names)}")
    kinds = {name: overrides.get(name) or _infer_kind(name, outputs[name]) for name in names}
    _require_finite(base, outputs)
    primary = primary_output or names[0]
    task_metrics = {}
    if LABELS in eval_set and kinds[primary] == "logits":
        task_metrics["accuracy"] = _accuracy(outputs[primary], np.asarray(eval_set[LABELS])[:rows])
    return Reference(
        outputs=outputs, kinds=kinds, primary=primary, rows=rows, inputs=tuple(inputs), task_metrics=task_metrics
    )


def evaluate(
    candidate: Path,
    *,
    reference: Reference,
    eval_set: Mapping[str, np.ndarray],
    threads: int = 1,
    latency_samples: int | None = None,
) -> Measurement:
    """Measure `candidate`'s size, latency and fidelity against `reference`.

    Args:
        candidate: the ONNX model to measure.
        reference: the base model's outputs on the same evaluation set.
        eval_set: the evaluation set the reference was computed on.
        threads: intra-op threads for the latency runs (fidelity always uses one).
        latency_samples: time only the first this many rows (default: every row).

    Raises:
        EvaluationError: the candidate does not load or run on the evaluation set, its outputs differ in
            name or shape from the base's, or it produces NaN or infinity.
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    timed_session = _session(candidate, threads=threads)
    inputs, rows = _eval_inputs(timed_session, eval_set)
    if rows != reference.rows or tuple(inputs) != reference.inputs:
        raise EvaluationError(
            f"the evaluation set ({rows} rows of {', '.join(inputs)}) is not the one the reference was computed on "
            f"({reference.rows} rows of {', '.join(reference.inputs)})"
        )
    timed_rows = rows if latency_samples is None else max(1, min(latency_samples, rows))
    outputs, latencies = _run_rows(timed_session, eval_set, inputs, rows=timed_rows, timed=True)
    if threads != 1 or timed_rows != rows:
        outputs, _ = _run_rows(_session(candidate, threads=1), eval_set, inputs, rows=rows, timed=False)
    _require_finite(candidate, outputs)
    return Measurement(
        size_bytes=candidate.stat().st_size,
        compressed_size_bytes=compressed_size(candidate),
        latency_p50_ms=float(np.percentile(latencies, 50)),
        latency_p95_ms=float(np.percentile(latencies, 95)),
        threads=threads,
        latency_samples=len(latencies),
        fidelity=fidelity(reference, outputs, labels=eval_set.get(LABELS)),
    )


def fidelity(
    reference: Reference, outputs: Mapping[str, np.ndarray], *, labels: np.ndarray | None = None
) -> dict[str, float]:
    """Every fidelity metric of `outputs` against `reference`, named as the module docstring says.

    Raises:
        EvaluationError: an output is missing or its shape differs from the base's.
    """
    metrics: dict[str, float] = {}
    for name, kind in reference.kinds.items():
        base = reference.outputs[name]
        if name not in outputs or outputs[name].shape != base.shape:
            got = outputs[name].shape if name in outputs else "nothing"
            raise EvaluationError(f"output {name!r}: the base gives shape {base.shape}, the candidate {got}")
        found = _score(kind, base, outputs[name])
        if kind == "logits" and labels is not None and name == reference.primary:
            found["accuracy"] = _accuracy(outputs[name], np.asarray(labels)[: reference.rows])
            found["task_metric"] = found["accuracy"]
        prefix = "" if name == reference.primary else f"{name}."
        metrics.update({f"{prefix}{metric}": value for metric, value in found.items()})
    return metrics


def cosine_similarity(base: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows (last axis); 1 for two zero vectors, 0 for one."""
    a = base.reshape(-1, base.shape[-1]).astype(np.float64)
    b = candidate.reshape(-1, candidate.shape[-1]).astype(np.float64)
    dot: np.ndarray = np.einsum("ij,ij->i", a, b)
    aa: np.ndarray = np.einsum("ij,ij->i", a, a)
    bb: np.ndarray = np.einsum("ij,ij->i", b, b)
    # sqrt(x * x) == x exactly in IEEE arithmetic, so a model compared with itself scores exactly 1.
    norms = np.sqrt(aa * bb)
    cos = np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)
    cos[(aa == 0) & (bb == 0)] = 1.0
    clipped: np.ndarray = np.clip(cos, -1.0, 1.0)
    return clipped


def kl_divergence(base_logits: np.ndarray, candidate_logits: np.ndarray) -> np.ndarray:
    """KL(softmax(base) || softmax(candidate)) of matching rows (last axis), in nats."""
    log_p: np.ndarray = _log_softmax(base_logits.reshape(-1, base_logits.shape[-1]).astype(np.float64))
    log_q = _log_softmax(candidate_logits.reshape(-1, candidate_logits.shape[-1]).astype(np.float64))
    kl: np.ndarray = np.sum(np.exp(log_p) * (log_p - log_q), axis=1)
    non_negative: np.ndarray = np.maximum(kl, 0.0)  # rounding can make a zero divergence slightly negative
    return non_negative


def compressed_size(path: Path) -> int:
    """The zstd (level 3) compressed size of the file, streamed so a large model is never held twice."""
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    total = 0
    with path.open("rb") as f:
        for chunk in compressor.read_to_iter(f, read_size=1 << 20):
            total += len(chunk)
    return total


def _score(kind: OutputKind, base: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    if kind == "embedding":
        cos = cosine_similarity(base, candidate)
        return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}
    if kind == "logits":
        width = base.shape[-1]
        agree = np.argmax(base.reshape(-1, width), axis=1) == np.argmax(candidate.reshape(-1, width), axis=1)
        return {"top1_agreement": float(agree.mean()), "kl": float(kl_divergence(base, candidate).mean())}
    return {"max_abs_diff": float(np.max(np.abs(base.astype(np.float64) - candidate.astype(np.float64))))}


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    predictions = np.argmax(logits.reshape(-1, logits.shape[-1]), axis=1)
    if labels.size != predictions.size:
        raise EvaluationError(
            f"labels have {labels.size} values but the logits give {predictions.size} predictions over "
            f"{len(logits)} rows; labels must hold one class id per prediction"
        )
    return float(np.mean(predictions == labels.reshape(-1)))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted: np.ndarray = x - x.max(axis=1, keepdims=True)
    result: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return result


def _infer_kind(name: str, stacked: np.ndarray) -> OutputKind:
    """Scoring kind from the base's stacked output (rows, batch of 1, ...)."""
    if not np.issubdtype(stacked.dtype, np.floating) or stacked.ndim < 2 or stacked.shape[-1] < 2:
        return "other"
    per_row = stacked.reshape(stacked.shape[0], -1, stacked.shape[-1])
    two_d = stacked.ndim == 3 and stacked.shape[1] == 1  # each sample's output was [1, dim]
    unit_norm = bool(np.all(np.abs(np.linalg.norm(per_row, axis=-1) - 1.0) < UNIT_NORM_TOLERANCE))
    if "embedding" in name.lower() or (two_d and unit_norm):
        return "embedding"
    return "logits"


def _eval_inputs(session: ort.InferenceSession, eval_set: Mapping[str, np.ndarray]) -> tuple[list[str], int]:
    """The model's input names (all must be in the evaluation set) and the number of rows."""
    names = [i.name for i in session.get_inputs()]
    if missing := [n for n in names if n not in eval_set]:
        raise EvaluationError(
            f"the evaluation set has no array for input(s) {', '.join(missing)}; it has {', '.join(sorted(eval_set))}"
        )
    lengths = {n: len(eval_set[n]) for n in names}
    if len(set(lengths.values())) != 1:
        raise EvaluationError(f"evaluation arrays differ in their number of rows: {lengths}")
    rows = next(iter(lengths.values()))
    if rows == 0:
        raise EvaluationError("the evaluation set has no rows")
    return names, rows


def _run_rows(
    session: ort.InferenceSession, eval_set: Mapping[str, np.ndarray], inputs: list[str], *, rows: int, timed: bool
) -> tuple[dict[str, np.ndarray], list[float]]:
    """Run rows 0..rows-1 one at a time; return the outputs stacked per name (float64) and the latencies."""
    types = {i.name: i.type for i in session.get_inputs()}
    feeds = [{n: _as_input(eval_set[n][r : r + 1], types[n], n) for n in inputs} for r in range(rows)]
    names = [o.name for o in session.get_outputs()]
    latencies: list[float] = []
    results: dict[str, list[np.ndarray]] = {n: [] for n in names}
    with _onnxruntime("running the model on the evaluation set"):
        if timed:
            for feed in feeds[:WARMUP_RUNS]:
                session.run(names, feed)
        for feed in feeds:
            started = time.perf_counter()
            values = session.run(names, feed)
            if timed:
                latencies.append((time.perf_counter() - started) * 1000.0)
            for name, value in zip(names, values, strict=True):
                results[name].append(np.asarray(value))
    try:
        stacked = {n: np.stack(v).astype(np.float64) if _is_float(v[0]) else np.stack(v) for n, v in results.items()}
    except ValueError as exc:
        raise EvaluationError(f"outputs change shape from row to row: {exc}") from None
    return stacked, latencies


def _is_float(value: np.ndarray) -> bool:
    return bool(np.issubdtype(value.dtype, np.floating))


def _as_input(array: np.ndarray, onnx_type: str, name: str) -> np.ndarray:
    """The array in the model's input type: floats are converted (an FP16 model takes float16), others must match."""
    wanted = _FLOAT_TYPES.get(onnx_type)
    if wanted is not None and np.issubdtype(array.dtype, np.floating):
        return np.ascontiguousarray(array, dtype=wanted)
    return np.ascontiguousarray(array)


def _require_finite(model: Path, outputs: Mapping[str, np.ndarray]) -> None:
    for name, values in outputs.items():
        if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
            bad = int(np.sum(~np.all(np.isfinite(values.reshape(len(values), -1)), axis=1)))
            raise EvaluationError(f"{model.name} output {name!r} is NaN or infinite for {bad} of {len(values)} rows")


def _session(path: Path, *, threads: int) -> ort.InferenceSession:
    if not path.is_file():
        raise EvaluationError(f"model {path} does not exist")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    with _onnxruntime(f"loading {path.name}"):
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@contextmanager
def _onnxruntime(doing: str) -> Iterator[None]:
    """Map onnxruntime's exceptions (Fail, InvalidArgument, RuntimeException...) to EvaluationError."""
    try:
        yield
    except EvaluationError:
        raise
    except Exception as exc:  # noqa: BLE001 - the boundary where onnxruntime's errors are mapped
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvaluationError(f"onnxruntime failed {doing}: {text}") from exc
