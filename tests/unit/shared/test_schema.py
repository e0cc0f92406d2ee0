"""The JSON Schema export: one file per message type, accepting exactly the wire form `decode` accepts,
deterministic, and current in docs/schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.messages.envelope import encode, message_types, wrap
from shared.schema import RECORDS, RESOURCES, export_json_schemas
from tests.unit.shared.messages.test_contracts import EVERY_SAMPLE

ENVELOPE_FIELDS = {"type", "schema_version", "id", "time", "source", "data"}


def test_export_writes_one_schema_per_type_with_the_envelope_required(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    written = export_json_schemas(tmp_path / "schemas")
    names = {p.name for p in written}
    expected = {f"{t}.v{v}.json" for t, v in message_types()} | {f"{stem}.json" for stem in [*RECORDS, *RESOURCES]}
    assert expected == names
    for path in written:
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        if path.name.startswith(("kv.", "resource.")):  # stored or written without an envelope
            continue
        assert ENVELOPE_FIELDS <= set(schema["required"]), path.name
        type_ = schema["properties"]["type"]["const"]
        assert path.name == f"{type_}.v{schema['properties']['schema_version']['const']}.json"


@pytest.mark.parametrize("key", sorted(EVERY_SAMPLE), ids=lambda k: f"{k[0]}.v{k[1]}")
def test_exported_schema_accepts_the_wire_form_and_pins_the_type(key: tuple[str, int], tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    export_json_schemas(tmp_path)
    type_, version = key
    validator = jsonschema.Draft202012Validator(json.loads((tmp_path / f"{type_}.v{version}.json").read_text()))
    doc = json.loads(encode(wrap(EVERY_SAMPLE[key], source="tests")))
    validator.validate(doc)
    assert not validator.is_valid(doc | {"type": "something.else"})
    assert not validator.is_valid(doc | {"schema_version": version + 1})
    assert not validator.is_valid(doc | {"surprise": 1})


def test_export_is_deterministic(tmp_path: Path) -> None:
    first = {p.name: p.read_bytes() for p in export_json_schemas(tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in export_json_schemas(tmp_path / "b")}
    assert first == second
    assert json.loads(first["kv.desired.v1.json"])["properties"]["schema_version"]["const"] == 1


def test_a_resource_is_published_under_its_own_id(tmp_path: Path) -> None:
    """An editor validating a blueprint file reads docs/schema/resource.blueprint.v1.json."""
    export_json_schemas(tmp_path)
    schema = json.loads((tmp_path / "resource.blueprint.v1.json").read_text())
    assert schema["$id"] == "urn:slmops:resource:blueprint:v1"
    assert set(schema["required"]) >= {"apiVersion", "kind", "metadata", "spec"}


def test_published_schemas_in_docs_are_current(tmp_path: Path) -> None:
    """docs/schema/ is what other systems read; regenerate with `slmops schema export`."""
    published = Path(__file__).resolve().parents[3] / "docs" / "schema"
    fresh = {p.name: p.read_text() for p in export_json_schemas(tmp_path)}
    current = {p.name: p.read_text() for p in published.glob("*.json")}
    assert current == fresh, "docs/schema is stale: run `slmops schema export docs/schema`"
