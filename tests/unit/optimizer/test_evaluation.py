"""Evaluation: fidelity metrics are right and repeatable, sizes and latencies are measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from services.optimizer.errors import EvaluationError
from services.optimizer.evaluation import (
    Reference,
    compressed_size,
    cosine_similarity,
    evaluate,
    kl_divergence,
    reference_outputs,
)
from services.optimizer.passes import PassContext, build_pass
from shared.messages.optimizer import PassSpec


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory, embedder: Path, eval_set: dict[str, np.ndarray]) -> Path:
    workdir = tmp_path_factory.mktemp("quantized")
    spec = PassSpec(type="OnnxDynamicQuantization", config={"op_types_to_quantize": ["MatMul"]})
    build_pass(spec).run(embedder, workdir / "q.onnx", context=PassContext(workdir=workdir, eval_set=eval_set))
    return workdir / "q.onnx"


@pytest.fixture(scope="module")
def reference(embedder: Path, eval_set: dict[str, np.ndarray]) -> Reference:
    return reference_outputs(embedder, eval_set)


def test_embedding_output_is_recognised(reference: Reference) -> None:
    assert reference.kinds == {"embedding": "embedding"} and reference.primary == "embedding"
    assert reference.rows == 24 and reference.inputs == ("input_ids", "attention_mask")


def test_a_model_against_itself_has_cosine_exactly_one(
    embedder: Path, reference: Reference, eval_set: dict[str, np.ndarray]
) -> None:
    m = evaluate(embedder, reference=reference, eval_set=eval_set)
    assert m.fidelity == {"cosine_mean": 1.0, "cosine_min": 1.0}


def test_fidelity_is_repeatable_across_runs_and_thread_counts(
    quantized: Path, reference: Reference, eval_set: dict[str, np.ndarray]
) -> None:
    first = evaluate(quantized, reference=reference, eval_set=eval_set, threads=1)
    second = evaluate(quantized, reference=reference, eval_set=eval_set, threads=2, latency_samples=4)
    assert first.fidelity == second.fidelity
    assert 0.9 < first.fidelity["cosine_min"] <= first.fidelity["cosine_mean"] < 1.0


def test_sizes_and_latencies_are_measured(
    quantized: Path, reference: Reference, eval_set: dict[str, np.ndarray]
) -> None:
    m = evaluate(quantized, reference=reference, eval_set=eval_set, threads=2, latency_samples=10)
    assert m.size_bytes == quantized.stat().st_size
    assert 0 < m.compressed_size_bytes == compressed_size(quantized) < m.size_bytes
    assert 0 < m.latency_p50_ms <= m.latency_p95_ms
    assert (m.threads, m.latency_samples) == (2, 10)


def test_logits_of_the_same_model_agree_fully(classifier: Path, classifier_eval_set: dict[str, np.ndarray]) -> None:
    reference = reference_outputs(classifier, classifier_eval_set)
    assert reference.kinds == {"logits": "logits"}
    m = evaluate(classifier, reference=reference, eval_set=classifier_eval_set)
    assert m.fidelity["top1_agreement"] == 1.0
    assert m.fidelity["kl"] == pytest.approx(0.0, abs=1e-12)


def test_labels_add_the_task_metric(classifier: Path, classifier_eval_set: dict[str, np.ndarray]) -> None:
    plain = reference_outputs(classifier, classifier_eval_set)
    predicted = plain.outputs["logits"].reshape(24, -1).argmax(axis=1)
    labels = predicted.copy()
    labels[:6] = (labels[:6] + 1) % 4  # a quarter of the labels disagree with the model
    eval_set = {**classifier_eval_set, "labels": labels}
    reference = reference_outputs(classifier, eval_set)
    assert reference.task_metrics == {"accuracy": 0.75}
    m = evaluate(classifier, reference=reference, eval_set=eval_set)
    assert m.fidelity["accuracy"] == m.fidelity["task_metric"] == 0.75


def test_output_kind_can_be_overridden(classifier: Path, classifier_eval_set: dict[str, np.ndarray]) -> None:
    reference = reference_outputs(classifier, classifier_eval_set, output_kinds={"logits": "embedding"})
    m = evaluate(classifier, reference=reference, eval_set=classifier_eval_set, latency_samples=1)
    assert set(m.fidelity) == {"cosine_mean", "cosine_min"}


def test_unknown_output_name_is_refused(classifier: Path, classifier_eval_set: dict[str, np.ndarray]) -> None:
    with pytest.raises(EvaluationError, match="has no output.s. probs; its outputs: logits"):
        reference_outputs(classifier, classifier_eval_set, primary_output="probs")


def test_eval_set_missing_an_input_is_refused(embedder: Path, eval_set: dict[str, np.ndarray]) -> None:
    with pytest.raises(EvaluationError, match="no array for input.s. attention_mask"):
        reference_outputs(embedder, {"input_ids": eval_set["input_ids"]})


def test_a_different_eval_set_than_the_reference_is_refused(
    embedder: Path, reference: Reference, eval_set: dict[str, np.ndarray]
) -> None:
    fewer = {k: v[:10] for k, v in eval_set.items()}
    with pytest.raises(EvaluationError, match="not the one the reference was computed on"):
        evaluate(embedder, reference=reference, eval_set=fewer)


def test_a_model_that_does_not_load_is_an_evaluation_error(
    tmp_path: Path, reference: Reference, eval_set: dict[str, np.ndarray]
) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(EvaluationError, match="onnxruntime failed loading broken.onnx"):
        evaluate(broken, reference=reference, eval_set=eval_set)


def test_nan_outputs_are_an_evaluation_error(
    embedder: Path, tmp_path: Path, reference: Reference, eval_set: dict[str, np.ndarray]
) -> None:
    model = onnx.load(str(embedder))
    for init in model.graph.initializer:
        if init.name == "dense.bias":
            init.CopyFrom(onnx.numpy_helper.from_array(np.full(64, np.nan, dtype=np.float32), "dense.bias"))
    path = tmp_path / "nan.onnx"
    onnx.save(model, str(path))
    with pytest.raises(EvaluationError, match="NaN or infinite for 24 of 24 rows"):
        evaluate(path, reference=reference, eval_set=eval_set, latency_samples=1)


def test_cosine_handles_scale_sign_and_zero_vectors() -> None:
    a = np.array([[1.0, 2.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    b = np.array([[2.0, 4.0], [-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_array_equal(cosine_similarity(a, b), [1.0, -1.0, 1.0, 0.0])


def test_kl_is_zero_for_equal_logits_and_positive_otherwise() -> None:
    logits = np.array([[1.0, 2.0, 3.0]])
    assert kl_divergence(logits, logits)[0] == 0.0
    assert kl_divergence(logits, logits[:, ::-1])[0] > 0.5
