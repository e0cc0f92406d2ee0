"""What `decode` refuses before any model sees it, and the caps every contract puts on its lists:
a poison body is an `InvalidMessage` with a reason, never an exception of another kind, a hang or a
megabyte of reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from shared.messages.common import ObjectRef
from shared.messages.device import MAX_CAPABILITIES, MAX_LABELS, MAX_OUTPUT_STATS, DeviceHello
from shared.messages.envelope import (
    MAX_ENVELOPE_BYTES,
    MAX_JSON_DEPTH,
    MAX_REASON_CHARS,
    InvalidMessage,
    MessageTooLarge,
    clip,
    decode,
    encode,
    wrap,
)
from shared.messages.optimizer import MAX_PASSES, MAX_RECIPES, OptimizeModel, PassSpec, Recipe
from shared.messages.rollout import MAX_SELECTED_DEVICES, MAX_WAVES, Gate, Selector, StartRollout, Wave
from tests.unit.shared.messages.test_contracts import SAMPLES


def _envelope(data: dict[str, Any], type_: str = "rollout.start") -> dict[str, Any]:
    return {"type": type_, "schema_version": 1, "id": "c1", "time": "2026-01-01T00:00:00Z", "source": "t", "data": data}


def _reason(raw: bytes) -> str:
    with pytest.raises(InvalidMessage) as err:
        decode(raw)
    return err.value.reason


def test_a_body_over_the_limit_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(MessageTooLarge, match=f"over the limit of {MAX_ENVELOPE_BYTES} bytes"):
        decode(b"\xff" * (MAX_ENVELOPE_BYTES + 1))


def test_a_valid_envelope_of_exactly_the_limit_is_accepted() -> None:
    body = encode(wrap(StartRollout(model="m", ref="1.0"), source="t"))
    padded = body[:-1] + b" " * (MAX_ENVELOPE_BYTES - len(body)) + b"}"
    assert len(padded) == MAX_ENVELOPE_BYTES
    assert decode(padded).data == StartRollout(model="m", ref="1.0")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xc3\x28 not utf-8", "not UTF-8"),
        ('{"a": 1}'.encode("utf-16"), "not UTF-8"),
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"a": 1e999}', "out of range"),
        (b'{"a": ' + b"9" * 5000 + b"}", "outside the 64-bit range"),
        (b'{"a": 9223372036854775808}', "outside the 64-bit range"),
        (b'{"a": "\\ud800"}', "lone surrogate"),
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), f"deeper than {MAX_JSON_DEPTH} levels"),
        (b'{"a": ' * 5000 + b"1" + b"}" * 5000, "nested"),
    ],
    ids=[
        "bad-utf8",
        "utf16",
        "nan",
        "infinity",
        "float-overflow",
        "huge-int",
        "int64+1",
        "surrogate",
        "deep",
        "deeper",
    ],
)
def test_json_that_would_hurt_a_consumer_later_is_refused_with_a_reason(raw: bytes, reason: str) -> None:
    found = _reason(raw)
    assert found.startswith("body is not JSON") and reason in found, found


def test_a_surrogate_pair_is_an_ordinary_character() -> None:
    doc = _envelope({"model": "m", "ref": "1.0", "selector": {"labels": {"emoji": "\U0001f600"}}})
    raw = json.dumps(doc).encode()  # ensure_ascii writes the pair as two escapes
    assert b"\\ud83d\\ude00" in raw
    assert decode(raw).data.selector.labels == {"emoji": "\U0001f600"}


def test_a_reason_lists_the_first_problems_and_counts_the_rest() -> None:
    doc = _envelope({"model": "m", "ref": "1.0", "selector": {"device_ids": ["bad id!"] * 500}})
    reason = _reason(json.dumps(doc).encode())
    assert len(reason) <= MAX_REASON_CHARS
    assert "device_ids" in reason


def test_clip_says_it_cut() -> None:
    assert clip("short", 10) == "short"
    cut = clip("x" * 5000, 100)
    assert len(cut) == 100 and cut.endswith("[cut from 5000 characters]")


def test_encode_refuses_what_every_receiver_would_refuse() -> None:
    """Each field within its caps, the whole over the envelope's limit: refused before it is sent."""
    pass_spec = PassSpec(type="P", config={f"k{j}": "v" * 1000 for j in range(10)})
    recipes = [Recipe(name=f"r{i}", passes=[pass_spec]) for i in range(MAX_RECIPES)]
    command = OptimizeModel(name="m", version="1", profile="p", recipes=recipes)
    with pytest.raises(MessageTooLarge, match=f"over the limit of {MAX_ENVELOPE_BYTES} bytes"):
        encode(wrap(command, source="t"))
    smaller = OptimizeModel(name="m", version="1", profile="p", recipes=recipes[:8])
    assert decode(encode(wrap(smaller, source="t"))).data == smaller


def test_no_message_takes_a_non_finite_number() -> None:
    """Every float of every contract refuses NaN and infinity (a NaN is unequal to itself: a record
    keyed or compared on it is never found again)."""
    checked = 0
    for sample in SAMPLES.values():
        doc = sample.model_dump(mode="python")
        for path in _float_paths(doc):
            for bad in (float("nan"), float("inf"), float("-inf")):
                with pytest.raises(ValidationError):
                    type(sample).model_validate(_set(doc, path, bad))
                checked += 1
    assert checked > 60, "the samples should hold floats in most contracts"


def _float_paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, float):
        return [path]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _float_paths(v, (*path, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _float_paths(v, (*path, i))]
    return []


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(doc) if isinstance(doc, dict) else list(doc)
    copy[path[0]] = _set(doc[path[0]], path[1:], value)
    return copy


def test_non_finite_numbers_are_refused_in_shared_value_objects_too() -> None:
    with pytest.raises(ValidationError):
        Gate(metric="error_rate", comparator="<", threshold=float("nan"))
    with pytest.raises(ValidationError):
        Wave(percent=100, soak_seconds=float("inf"))
    assert ObjectRef(key="k").bucket is None


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda n: Selector(device_ids=[f"d{i}" for i in range(n)]), MAX_SELECTED_DEVICES),
        (
            lambda n: StartRollout(model="m", ref="1", waves=[Wave(percent=100 * (i + 1) / n) for i in range(n)]),
            MAX_WAVES,
        ),
        (lambda n: Recipe(name="r", passes=[PassSpec(type="P")] * n), MAX_PASSES),
        (
            lambda n: OptimizeModel(
                name="m",
                version="1",
                profile="p",
                recipes=[Recipe(name=f"r{i}", passes=[PassSpec(type="P")]) for i in range(n)],
            ),
            MAX_RECIPES,
        ),
        (lambda n: _hello(labels={f"k{i}": "v" for i in range(n)}), MAX_LABELS),
        (lambda n: _hello(accelerators=["npu"] * n), MAX_CAPABILITIES),
    ],
    ids=["device_ids", "waves", "passes", "recipes", "labels", "accelerators"],
)
def test_lists_in_commands_and_reports_are_capped(build: Any, field: int) -> None:
    build(field)
    with pytest.raises(ValidationError, match=f"at most {field}"):
        build(field + 1)


def test_telemetry_output_stats_are_capped() -> None:
    window = SAMPLES["telemetry.window"].model_dump(mode="json")
    moments = {"count": 1, "mean": 0.5, "variance": 0.0}
    many = window | {"outputs": {f"s{i}": moments for i in range(MAX_OUTPUT_STATS + 1)}}
    with pytest.raises(ValidationError, match=f"at most {MAX_OUTPUT_STATS}"):
        type(SAMPLES["telemetry.window"]).model_validate(many)


def _hello(**over: Any) -> DeviceHello:
    base: dict[str, Any] = {
        "device_id": "d1",
        "device_class": "rpi5",
        "arch": "aarch64",
        "ram_mb": 8192,
        "cpu_count": 4,
        "onnxruntime_version": "1.20.1",
        "execution_providers": ["CPUExecutionProvider"],
        "agent_version": "0.1",
    }
    return DeviceHello(**(base | over))
