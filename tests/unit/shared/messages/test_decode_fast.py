"""`decode_fast` gives `decode`'s verdict on telemetry windows, valid or broken in any way hypothesis
finds: the same accepted envelope, or a refusal (with decode's own reason)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.messages.device import TelemetryWindow, TelemetryWindowV1
from shared.messages.envelope import InvalidMessage, decode, decode_fast, encode, wrap
from tests.unit.telemetry.windows import window

TYPES = (TelemetryWindow, TelemetryWindowV1)
VALID = json.loads(encode(wrap(window("dev-1", [1.0, 2.5, 40.0], errors=1), source="device:dev-1")))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += paths(value, (*prefix, i))
    return out


def replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = json.loads(json.dumps(doc))
    node = copy
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return copy


def verdict(decoder: Any, raw: bytes) -> Any:
    try:
        return decoder(raw, expected=TYPES).model_dump(mode="json")
    except InvalidMessage as exc:
        return ("refused", exc.reason)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fast_and_strict_decoding_agree_on_any_change_to_a_window(data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(paths(VALID)))
    raw = json.dumps(replaced(VALID, path, data.draw(json_values))).encode()
    assert verdict(decode_fast, raw) == verdict(decode, raw)


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps(VALID).replace('"request_count": 3', '"request_count": NaN').encode(),
        json.dumps(VALID).replace('"request_count": 3', '"request_count": 1e999').encode(),
        json.dumps(VALID).replace('"request_count": 3', '"request_count": 99999999999999999999999').encode(),
        json.dumps(VALID).replace('"source": "device:dev-1"', '"source": "\\ud800"').encode(),
        json.dumps(VALID).encode()[:-1],
        b"\xff" + json.dumps(VALID).encode(),
    ],
)
def test_what_the_strict_parser_refuses_the_fast_path_refuses(raw: bytes) -> None:
    with pytest.raises(InvalidMessage):
        decode(raw, expected=TYPES)
    assert verdict(decode_fast, raw) == verdict(decode, raw)
