from __future__ import annotations

import json

import pytest

from shared.messages import InvalidMessage, decode, encode, wrap
from shared.messages.common import ObjectRef
from shared.messages.envelope import deterministic_id, message_types
from shared.messages.registry import ListModels, RegisterModel, SetAlias


def test_round_trip_keeps_type_and_payload() -> None:
    cmd = SetAlias(name="tiny", alias="stable", version="1.0")
    env = wrap(cmd, source="tests")
    back = decode(encode(env))
    assert back.data == cmd and back.id == env.id and back.type == "model.alias.set"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[]", "not a valid envelope"),
        (
            json.dumps(
                {
                    "type": "x.y",
                    "schema_version": 1,
                    "id": "a",
                    "time": "2026-01-01T00:00:00Z",
                    "source": "s",
                    "data": {},
                }
            ).encode(),
            "unknown message type 'x.y'",
        ),
        (
            json.dumps(
                {
                    "type": "model.alias.set",
                    "schema_version": 9,
                    "id": "a",
                    "time": "2026-01-01T00:00:00Z",
                    "source": "s",
                    "data": {},
                }
            ).encode(),
            "unsupported schema_version 9",
        ),
        (
            json.dumps(
                {
                    "type": "model.alias.set",
                    "schema_version": 1,
                    "id": "a",
                    "time": "2026-01-01T00:00:00",
                    "source": "s",
                    "data": {},
                }
            ).encode(),
            "time",
        ),
        (
            json.dumps(
                {
                    "type": "model.alias.set",
                    "schema_version": 1,
                    "id": "has space",
                    "time": "2026-01-01T00:00:00Z",
                    "source": "s",
                    "data": {},
                }
            ).encode(),
            "id",
        ),
    ],
    ids=["bytes", "array", "unknown-type", "future-version", "naive-time", "bad-id"],
)
def test_decode_rejects_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as err:
        decode(body)
    assert reason in err.value.reason


def test_decode_refuses_types_the_receiver_does_not_accept() -> None:
    env = wrap(ListModels(), source="tests")
    with pytest.raises(InvalidMessage, match="not accepted here"):
        decode(encode(env), expected=(RegisterModel,))


def test_payloads_forbid_extra_fields() -> None:
    with pytest.raises(ValueError, match="Extra inputs"):
        RegisterModel.model_validate({"name": "a", "version": "1", "artifact": {"key": "k"}, "surprise": True})


def test_names_and_versions_are_constrained() -> None:
    for bad in ("Upper", "-lead", "has.dot", "x" * 64):
        with pytest.raises(ValueError):
            RegisterModel(name=bad, version="1", artifact=ObjectRef(key="k"))
    with pytest.raises(ValueError):
        RegisterModel(name="ok", version="1+build", artifact=ObjectRef(key="k"))


def test_deterministic_ids_are_full_sha256_and_stable() -> None:
    a = deterministic_id("model.registered", "tiny", "1.0")
    assert a == deterministic_id("model.registered", "tiny", "1.0") and len(a) == 64
    assert a != deterministic_id("model.registered", "tiny1", ".0"), "parts must not run together"


def test_every_registered_type_is_unique_and_versioned() -> None:
    types = message_types()
    assert ("model.register", 1) in types and ("model.registered", 1) in types
    assert all(v >= 1 for _, v in types)


def test_a_body_nested_too_deeply_is_invalid_not_a_crash() -> None:
    with pytest.raises(InvalidMessage, match="nested too deeply"):
        decode(b"[" * 200_000)
