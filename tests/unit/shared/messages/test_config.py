"""Application settings (`shared.messages.common.Config`) as every contract that carries them sees them:
plain finite JSON within the size and depth caps, refused with the nested field's path, and named by
the digest of their canonical JSON (a blueprint's diff, a device's status and the platform agree)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from shared.messages import blueprint, common
from shared.messages.common import MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH, config_digest
from shared.messages.device import DesiredState, DeviceStatus
from shared.messages.rollout import MAX_SELECTOR_VALUES, StartRollout

T0 = datetime(2026, 1, 1, tzinfo=UTC)
D1 = "1" * 64


def desired(**fields: Any) -> DesiredState:
    values: dict[str, Any] = {
        "device_id": "rpi5-0001",
        "model": "minilm",
        "version": "1.1",
        "digest": D1,
        "size_bytes": 1,
        "signature": "c2ln",
        "issued_at": T0,
    }
    return DesiredState(**(values | fields))


def refusal(config: object) -> tuple[str, str]:
    """(the field path, the reason) of the first error a desired state with `config` gets."""
    with pytest.raises(ValidationError) as exc:
        DesiredState.model_validate(desired().model_dump() | {"config": config})
    error = exc.value.errors()[0]
    return ".".join(str(p) for p in error["loc"]), error["msg"]


def nested(depth: int) -> dict[str, Any]:
    """An object `depth` levels deep (the outermost counts as one)."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"x": value}
    return value


def test_the_type_lives_in_common_and_the_blueprint_module_still_offers_it() -> None:
    assert blueprint.MAX_CONFIG_BYTES == MAX_CONFIG_BYTES
    assert blueprint.Config is common.Config


@pytest.mark.parametrize(
    ("config", "where", "reason"),
    [
        ({"v": [1, float("inf")]}, "config.v.1", "numbers must be finite, got inf"),
        ({"a": {"b": {"when": T0}}}, "config.a.b.when", "not a JSON value (datetime); quote it to make it a string"),
        ({"a": [{"1": {2: "x"}}]}, "config.a.0.1", "keys must be strings, got 2"),
        (
            nested(MAX_CONFIG_DEPTH + 1),
            "config" + ".x" * MAX_CONFIG_DEPTH,
            f"nested deeper than {MAX_CONFIG_DEPTH} levels",
        ),
        ({"s": "\ud800"}, "config", "strings must be valid Unicode (a lone surrogate is not)"),
        ([1, 2], "config", "Input should be a valid dictionary"),
    ],
)
def test_settings_that_are_not_plain_json_are_refused_at_the_nested_field(
    config: object, where: str, reason: str
) -> None:
    assert refusal(config) == (where, reason)


def test_settings_up_to_the_caps_are_accepted() -> None:
    padding = MAX_CONFIG_BYTES - len('{"blob":""}')
    assert desired(config={"blob": "x" * padding}).config == {"blob": "x" * padding}
    assert desired(config=nested(MAX_CONFIG_DEPTH)).config == nested(MAX_CONFIG_DEPTH)


def test_settings_over_the_size_limit_are_refused_with_their_size_in_utf8_bytes() -> None:
    blob = "é" * (MAX_CONFIG_BYTES // 2)  # two bytes each in UTF-8: over the limit, though not in characters
    size = len(json.dumps({"blob": blob}, ensure_ascii=False, separators=(",", ":")).encode())
    assert refusal({"blob": blob}) == (
        "config",
        f"{size} bytes as JSON; the limit is {MAX_CONFIG_BYTES} (settings, not data)",
    )


def test_the_digest_is_the_sha256_of_canonical_json() -> None:
    config = {"b": [1, 2.5, True, None], "a": {"z": "ü", "y": {}}}
    canonical = '{"a":{"y":{},"z":"ü"},"b":[1,2.5,true,null]}'
    assert config_digest(config) == hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize(
    ("left", "right", "same"),
    [
        ({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"d": 3, "c": 2}, "a": 1}, True),  # key order is not identity
        ({"a": 1}, {"a": 1.0}, False),  # equal in Python, not in JSON
        ({"a": 1}, {"a": True}, False),
        ({"a": [1, 2]}, {"a": [2, 1]}, False),  # list order is
        ({}, {"a": None}, False),
    ],
)
def test_equal_settings_have_one_digest_and_different_ones_another(
    left: dict[str, Any], right: dict[str, Any], same: bool
) -> None:
    assert (config_digest(left) == config_digest(right)) is same


def test_a_desired_state_carries_its_settings_through_the_kv_value() -> None:
    state = desired(config={"lang": "de", "limits": {"max_tokens": 128}})
    assert DesiredState.model_validate_json(state.model_dump_json()) == state
    assert desired().config is None and json.loads(desired().model_dump_json())["config"] is None


def test_a_status_names_the_settings_by_digest() -> None:
    fields: dict[str, Any] = {"device_id": "d", "desired_revision": 1, "digest": D1, "step": "active"}
    assert DeviceStatus(**fields, config_digest=config_digest({})).config_digest == config_digest({})
    with pytest.raises(ValidationError, match="config_digest"):
        DeviceStatus(**fields, config_digest="not-a-digest")


def test_a_rollout_carries_settings_and_a_profile_per_class() -> None:
    cmd = StartRollout(model="m", ref="stable", profiles={"rpi5": "rpi5-int8"}, config={"lang": "de"})
    assert (cmd.profiles, cmd.config) == ({"rpi5": "rpi5-int8"}, {"lang": "de"})
    assert (StartRollout(model="m", ref="stable").profiles, StartRollout(model="m", ref="stable").config) == ({}, None)
    with pytest.raises(ValidationError, match="profiles"):
        StartRollout(model="m", ref="stable", profiles={"rpi5": "Not A Profile"})
    with pytest.raises(ValidationError, match="profiles"):
        StartRollout(model="m", ref="stable", profiles={f"c{i}": "p" for i in range(MAX_SELECTOR_VALUES + 1)})
    with pytest.raises(ValidationError, match=r"config\.x"):
        StartRollout(model="m", ref="stable", config={"x": float("nan")})
