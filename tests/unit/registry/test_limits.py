"""Every record, event and reply the registry writes is bounded by its contract's caps
(shared/messages/registry.py), and a command over a cap is refused when it is decoded, naming the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from services.registry import domain, integrity
from services.registry.errors import InvalidCommand
from shared.messages.envelope import InvalidMessage, decode, encode, wrap
from shared.messages.registry import (
    MAX_ACCELERATORS,
    MAX_ALIAS_HISTORY,
    MAX_DESCRIPTION_CHARS,
    MAX_EVAL_SET_ARRAYS,
    MAX_EVENT_BYTES,
    MAX_LABEL_VALUE_BYTES,
    MAX_LABELS,
    MAX_METRICS,
    MAX_OP_TYPES,
    MAX_OPSET_DOMAINS,
    MAX_RANK,
    MAX_RECIPE_BYTES,
    MAX_RECORD_BYTES,
    MAX_TENSORS,
    MAX_VARIANTS_PER_VERSION,
    AliasChange,
    AliasChanged,
    AliasRecord,
    Artifact,
    EvalSet,
    ModelRegistered,
    ModelVersionRecord,
    OnnxInfo,
    RegisterModel,
    RegisterVariant,
    Requirements,
    SetAlias,
    TensorSpec,
    VariantRecord,
    VariantRegistered,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BIG = 2**63 - 1
# The characters that encode longest: `"` takes two bytes in JSON, `😀` four of UTF-8.
QUOTES = '"'
WIDE = "😀"


def maximal_onnx() -> OnnxInfo:
    """An interface description with every list full and every name as long as it may be."""

    def spec(i: int) -> TensorSpec:
        name = f"{i:03d}" + "x" * 125
        return TensorSpec(name=name, dtype="float8e4m3fnuz", shape=["d" * 31 + str(j % 10) for j in range(MAX_RANK)])

    return OnnxInfo(
        ir_version=BIG,
        opsets={f"{i:02d}" + "d" * 62: BIG for i in range(MAX_OPSET_DOMAINS)},
        producer="p" * 128,
        inputs=[spec(i) for i in range(MAX_TENSORS)],
        outputs=[spec(i) for i in range(MAX_TENSORS)],
        parameters=BIG,
        op_types=[f"{i:03d}" + "o" * 61 for i in range(MAX_OP_TYPES)],
    )


def maximal_artifact() -> Artifact:
    return Artifact(digest="a" * 64, size_bytes=BIG, key="k" * 256, signature="s" * 128)


def maximal_version() -> ModelVersionRecord:
    return ModelVersionRecord(
        name="n" * 63,
        version="1" * 63,
        artifact=maximal_artifact(),
        onnx=maximal_onnx(),
        eval_set=EvalSet(
            digest="b" * 64,
            size_bytes=BIG,
            key="k" * 256,
            samples=BIG,
            arrays={f"{i:03d}" + "x" * 125: [BIG] * MAX_RANK for i in range(MAX_EVAL_SET_ARRAYS)},
        ),
        labels={f"{i:02d}" + "k" * 61: QUOTES * MAX_LABEL_VALUE_BYTES for i in range(MAX_LABELS)},
        # the longest JSON under both description caps: as many 4-byte characters as the byte cap
        # leaves room for, the rest of the characters escaped
        description=WIDE * 698 + QUOTES * (MAX_DESCRIPTION_CHARS - 698),
        registered_at=T0,
        command_id="c" * 128,
    )


def maximal_variant() -> VariantRecord:
    recipe_text = "r" * (MAX_RECIPE_BYTES - len('{"k":""}'))
    return VariantRecord(
        name="n" * 63,
        version="1" * 63,
        variant="v" * 63,
        parent_digest="a" * 64,
        artifact=maximal_artifact(),
        onnx=maximal_onnx(),
        recipe={"k": recipe_text},
        metrics={f"{i:02d}" + "m" * 62: -1.7976931348623157e308 for i in range(MAX_METRICS)},
        requirements=Requirements(
            min_onnxruntime="1111.1111.1111",
            opset=10_000,
            contrib_ops=[f"{i:03d}" + "o" * 61 for i in range(MAX_OP_TYPES)],
            min_ram_mb=2**40,
            accelerators=[f"{i:02d}" + "a" * 30 for i in range(MAX_ACCELERATORS)],
        ),
        registered_at=T0,
        command_id="c" * 128,
    )


def wire_size(event: Any) -> int:
    return len(encode(wrap(event, source="registry", id="e" * 64)))


@pytest.mark.parametrize("build", [maximal_version, maximal_variant], ids=["version", "variant"])
def test_a_record_with_every_field_at_its_cap_fits_the_record_and_event_bounds(build: Any) -> None:
    record = build()
    size = len(record.model_dump_json().encode())
    assert size <= MAX_RECORD_BYTES, f"{size} bytes"
    assert MAX_EVENT_BYTES < 1024**2 // 4, "an event is far below NATS's default 1 MiB max_payload"
    event = (
        ModelRegistered(record=record) if isinstance(record, ModelVersionRecord) else VariantRegistered(record=record)
    )
    assert wire_size(event) <= MAX_EVENT_BYTES
    assert integrity.check_record(record, what="maximal") == record, "and it reads back as itself"


def test_an_alias_record_with_its_full_history_is_small() -> None:
    change = AliasChange(version="1" * 63, previous="2" * 63, at=T0, command_id="c" * 128)
    record = AliasRecord(name="n" * 63, alias="a" * 63, version="1" * 63, history=[change] * MAX_ALIAS_HISTORY)
    assert len(record.model_dump_json().encode()) <= 16 * 1024
    event = AliasChanged(name="n" * 63, alias="a" * 63, version="1" * 63, previous="2" * 63)
    assert wire_size(event) <= 1024


def test_an_alias_keeps_its_latest_changes_only() -> None:
    record = None
    for i in range(MAX_ALIAS_HISTORY + 5):
        record, _ = domain.apply_alias(record, name="m", alias="stable", version=str(i), at=T0, command_id=f"c{i}")
    assert record is not None and len(record.history) == MAX_ALIAS_HISTORY
    assert record.history[-1].version == str(MAX_ALIAS_HISTORY + 4) and record.history[0].version == "5"


def test_a_version_with_its_full_complement_of_variants_takes_no_more() -> None:
    variants = [maximal_variant().model_copy(update={"variant": f"v{i}"}) for i in range(MAX_VARIANTS_PER_VERSION)]
    domain.check_variant_room(variants, variant="v0", what="m 1")  # re-registering one of them is not a new one
    with pytest.raises(InvalidCommand, match=f"m 1 has {MAX_VARIANTS_PER_VERSION} variants"):
        domain.check_variant_room(variants, variant="extra", what="m 1")


def test_a_variant_that_would_make_get_too_large_to_answer_is_refused() -> None:
    version, variant = maximal_version(), maximal_variant()
    integrity.check_detail(version, [variant], what="small enough")
    with pytest.raises(InvalidCommand, match="over the 786432 a registry.get reply may carry"):
        integrity.check_detail(version, [variant] * 8, what="m 1 variant v8")


# --- commands over a cap are refused when decoded, naming the field ---------------------------


def command_json(type_: str, data: dict[str, Any]) -> bytes:
    envelope = {"type": type_, "schema_version": 1, "id": "c1", "time": "2026-01-01T00:00:00Z", "source": "t"}
    return json.dumps(envelope | {"data": data}).encode()


REGISTER = {"name": "tiny", "version": "1.0", "artifact": {"key": "incoming/x/m.onnx"}}
VARIANT = REGISTER | {"variant": "int8"}
DEEP: dict[str, Any] = {"a": 1}
for _ in range(8):
    DEEP = {"a": DEEP}


@pytest.mark.parametrize(
    ("type_", "data", "expected"),
    [
        ("model.register", REGISTER | {"labels": {f"k{i}": "v" for i in range(MAX_LABELS + 1)}}, "labels: Dictionary"),
        ("model.register", REGISTER | {"labels": {"k": "v" * 129}}, "labels.k: String should have at most 128"),
        ("model.register", REGISTER | {"labels": {"k": "é" * 100}}, "labels.k: Value error, a label value is at most"),
        ("model.register", REGISTER | {"labels": {"k": "\x1b[31m"}}, "labels.k: Value error, .*control characters"),
        ("model.register", REGISTER | {"labels": {"bad key": "v"}}, r"labels.bad key.\[key\]: String should match"),
        ("model.register", REGISTER | {"description": "\x07"}, "description: Value error"),
        ("model.register", REGISTER | {"description": "d" * 2001}, "description: String should have at most 2000"),
        ("model.variant.register", VARIANT | {"metrics": {f"m{i}": 1.0 for i in range(65)}}, "metrics: Dictionary"),
        ("model.variant.register", VARIANT | {"recipe": {"k": "r" * 9000}}, "recipe: Value error, the recipe is"),
        (
            "model.variant.register",
            VARIANT | {"recipe": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}},
            "nested deeper",
        ),
        (
            "model.variant.register",
            VARIANT | {"requirements": {"contrib_ops": ["x"] * 129}},
            "requirements.contrib_ops",
        ),
        ("model.variant.register", VARIANT | {"requirements": {"min_ram_mb": 2**41}}, "requirements.min_ram_mb"),
    ],
)
def test_a_command_over_a_cap_is_refused_naming_the_field(type_: str, data: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidMessage, match=expected):
        decode(command_json(type_, data))


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_literals_in_a_command_are_refused(literal: str) -> None:
    """Python's JSON parser would read these literals (other senders' encoders write them)."""
    for value in ({"metrics": {"cosine": "@"}}, {"recipe": {"passes": [{"alpha": "@"}]}}):
        raw = command_json("model.variant.register", VARIANT | value).replace(b'"@"', literal.encode())
        with pytest.raises(InvalidMessage, match=f"{literal.lstrip('-')}|finite"):
            decode(raw)


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_the_registry_s_own_models_refuse_non_finite_numbers(number: float) -> None:
    """Whatever the JSON layer lets through, a metric or a recipe value must be finite to be recorded."""
    with pytest.raises(ValidationError, match="metrics.cosine\n  Input should be a finite number"):
        RegisterVariant.model_validate(VARIANT | {"metrics": {"cosine": number}})
    with pytest.raises(ValidationError, match="finite"):
        RegisterVariant.model_validate(VARIANT | {"recipe": {"passes": [{"alpha": number}]}})


def test_the_recipe_check_refuses_non_finite_numbers_itself() -> None:
    """Not only through pydantic's JsonValue: the registry's own validation walks the recipe."""
    from shared.messages.registry import _check_json

    with pytest.raises(ValueError, match=r"recipe.a\[0\] holds nan"):
        _check_json({"a": [float("nan")]}, depth=1, where="recipe")


# --- versions and aliases live in distinct namespaces -----------------------------------------


@pytest.mark.parametrize(
    ("type_", "data", "expected"),
    [
        ("model.register", REGISTER | {"version": "stable"}, "version: Value error, a version starts with a digit"),
        ("model.register", REGISTER | {"version": "latest"}, "version: Value error, a version starts with a digit"),
        ("model.register", REGISTER | {"version": "v1"}, "version: Value error, a version starts with a digit"),
        ("model.variant.register", VARIANT | {"version": "canary"}, "version: Value error"),
        ("model.alias.set", {"name": "tiny", "alias": "1.0", "version": "1.0"}, "alias: Value error, an alias starts"),
        ("model.alias.set", {"name": "tiny", "alias": "latest", "version": "1.0"}, "alias: Value error, 'latest' is"),
        ("model.alias.set", {"name": "tiny", "alias": "stable", "version": "canary"}, "version: Value error"),
    ],
)
def test_versions_start_with_a_digit_and_aliases_with_a_letter(type_: str, data: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidMessage, match=expected):
        decode(command_json(type_, data))


def test_well_named_versions_and_aliases_are_accepted() -> None:
    assert RegisterModel.model_validate(REGISTER | {"version": "2024-06-01"}).version == "2024-06-01"
    assert RegisterVariant.model_validate(VARIANT | {"version": "1.0.0-rc.1"}).version == "1.0.0-rc.1"
    assert SetAlias(name="tiny", alias="canary-eu", version="10").alias == "canary-eu"
