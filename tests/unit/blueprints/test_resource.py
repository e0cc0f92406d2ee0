"""The Blueprint resource itself (shared/messages/blueprint.py): its defaults, its round trip, and its
published JSON Schema accepting the files `apply` accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from services.blueprints.load import load_blueprints
from shared.messages.blueprint import (
    API_VERSION,
    SCHEMA_ID,
    Blueprint,
    MaintenanceWindow,
    RolloutPolicy,
    blueprint_json_schema,
)
from shared.messages.rollout import StartRollout

from .factories import blueprint

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "examples" / "blueprint.yaml"


def test_the_default_policy_is_the_rollout_commands() -> None:
    policy, command = RolloutPolicy(), StartRollout(model="m", ref="1")
    assert policy.waves == [w.percent for w in command.waves]
    assert policy.soak == command.soak_seconds
    assert policy.install_threshold == command.install_threshold
    assert policy.gates == command.gates == []


@pytest.mark.parametrize(
    ("text", "seconds"), [(0, 0.0), (90, 90.0), ("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("1.5h", 5400.0)]
)
def test_durations_are_seconds_or_a_number_with_a_unit(text: object, seconds: float) -> None:
    assert RolloutPolicy.model_validate({"soak": text}).soak == seconds


def test_a_window_may_cross_midnight() -> None:
    window = MaintenanceWindow(start="22:00", end="04:00", timezone="Europe/Berlin")
    assert (window.start, window.end) == ("22:00", "04:00")


def test_the_resource_round_trips_through_json_with_its_field_names() -> None:
    original = blueprint(
        "demo",
        labels={"fleet": "demo"},
        track="candidate",
        promote={"from": "candidate", "to": "stable"},
        overrides=[{"name": "lab", "match": {"site": "lab"}, "pin": "1.0.0", "config": {"lang": "en"}}],
    )
    dumped = original.model_dump(mode="json")
    assert dumped["apiVersion"] == API_VERSION
    assert dumped["spec"]["promote"]["from"] == "candidate"
    assert Blueprint.model_validate_json(original.model_dump_json()) == original


def test_a_blueprint_is_frozen() -> None:
    with pytest.raises(ValueError):
        blueprint("demo").spec.priority = 3  # type: ignore[misc]


def test_the_schema_is_published_with_its_id_and_dialect() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = blueprint_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"] == SCHEMA_ID
    assert schema["title"] == "Blueprint slmops.dev/v1"
    assert set(schema["required"]) == {"apiVersion", "kind", "metadata", "spec"}


def test_the_schema_accepts_the_example_file_as_written_and_as_stored() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(blueprint_json_schema())
    written = yaml.safe_load(EXAMPLE.read_text())
    validator.validate(written)
    [stored] = load_blueprints(EXAMPLE.read_text())
    validator.validate(stored.model_dump(mode="json"))


def test_the_schema_refuses_what_the_model_refuses_structurally() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(blueprint_json_schema())
    document = yaml.safe_load(EXAMPLE.read_text())
    document["spec"]["colour"] = "blue"
    assert not validator.is_valid(document)


@given(st.dictionaries(st.sampled_from(["site", "region", "tier"]), st.sampled_from(["a", "b"]), min_size=1))
def test_an_override_is_refused_when_an_earlier_one_catches_all_its_devices(match: dict[str, str]) -> None:
    earlier = dict(list(match.items())[:1])
    overrides = [{"name": "first", "match": earlier, "pin": "1"}, {"name": "second", "match": match, "pin": "2"}]
    with pytest.raises(ValueError, match=r"never applies: every device it matches also matches overrides\[0\]"):
        blueprint("demo", overrides=overrides)
