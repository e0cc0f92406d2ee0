"""Loading blueprint files (services/blueprints/load.py): good files load, bad ones are refused with
the document, the field path and the reason, all problems at once."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest
import yaml

from services.blueprints.errors import InvalidBlueprint
from services.blueprints.load import (
    MAX_FILE_BYTES,
    MAX_NODES,
    MAX_PROBLEMS,
    Catalogue,
    check_against,
    load_blueprints,
)
from shared.errors import InvalidRequest
from shared.messages.blueprint import MAX_CONFIG_BYTES
from shared.messages.rollout import Gate

from .factories import blueprint

ROOT = Path(__file__).resolve().parents[3]
PROFILES = {
    path.stem: yaml.safe_load(path.read_text())["device_class"]
    for path in (ROOT / "deploy" / "profiles").glob("*.yaml")
    if path.stem != "recipes"
}
CATALOGUE = Catalogue(device_classes=frozenset(PROFILES.values()), profiles=PROFILES)

HEAD = "apiVersion: slmops.dev/v1\nkind: Blueprint\nmetadata: {name: demo}\n"


def doc(spec: str, *, head: str = HEAD) -> str:
    return head + "spec:\n" + "".join(f"  {line}\n" for line in dedent(spec).strip().splitlines())


def refused(text: str, catalogue: Catalogue | None = None) -> str:
    with pytest.raises(InvalidBlueprint) as caught:
        load_blueprints(text, source="fleet.yaml", catalogue=catalogue)
    return str(caught.value)


def test_the_example_blueprint_loads_against_the_deploy_profiles() -> None:
    path = ROOT / "deploy" / "examples" / "blueprint.yaml"
    [loaded] = load_blueprints(path.read_text(), source=str(path), catalogue=CATALOGUE)
    assert loaded.name == "demo-fleet"
    assert set(loaded.spec.profiles) == {"rpi5", "jetson", "gateway"}
    assert [o.name for o in loaded.spec.overrides] == ["site-lab", "cellular-gateways"]


def test_gate_notation_is_expanded_as_the_rollout_cli_does() -> None:
    [loaded] = load_blueprints(doc('model: m\ntrack: stable\nrollout: {gates: ["latency_p95_ms<=+10%@200"]}'))
    assert loaded.spec.rollout.gates == [
        Gate(metric="latency_p95_ms", comparator="<=", threshold=1.1, min_samples=200, compare_to_baseline="ratio")
    ]


def test_gates_may_also_be_written_as_objects() -> None:
    spec = "model: m\ntrack: stable\nrollout: {gates: [{metric: error_rate, comparator: '<=', threshold: 0.1}]}"
    [loaded] = load_blueprints(doc(spec))
    assert loaded.spec.rollout.gates[0].threshold == 0.1


def test_several_documents_load_in_order_and_empty_ones_are_skipped() -> None:
    second = HEAD.replace("demo", "lab") + "spec: {model: m, track: stable, priority: 5}\n"
    text = "---\n" + doc("model: m\ntrack: stable") + "---\n" + second + "---\n"
    assert [b.name for b in load_blueprints(text)] == ["demo", "lab"]


def test_a_stored_blueprint_loads_back_to_itself() -> None:
    original = blueprint("demo", labels={"fleet": "demo"}, overrides=[{"name": "a", "match": {"s": "1"}, "pin": "1"}])
    assert load_blueprints(yaml.safe_dump(original.model_dump(mode="json"))) == [original]


def test_the_loader_raises_an_invalid_request() -> None:
    assert issubclass(InvalidBlueprint, InvalidRequest)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "model: m\ntrack: stable\noverrides: [{name: a, match: {site: b}, pin: '1.0', rollout: {soak: 1}}]",
            "fleet.yaml, document 1 (demo): spec.overrides[0].rollout: a pinned override (1.0) is not rolled out "
            "by policy: remove pin or rollout",
        ),
        (
            "model: m\ntrack: stable\noverrides: [{name: a, match: {site: b}, pin: 1.0}]",
            'fleet.yaml, document 1 (demo): spec.overrides[0].pin: write the version in quotes ("1.0"): '
            "YAML read it as the number 1.0",
        ),
        (
            "model: m\ntrack: stable\noverrides: [{name: a, match: {site: b}}]",
            "fleet.yaml, document 1 (demo): spec.overrides[0]: the override changes nothing: give it a pin, "
            "a rollout or a config",
        ),
        (
            "model: m\ntrack: stable\noverrides: [{name: a, match: {}, pin: '1'}]",
            "fleet.yaml, document 1 (demo): spec.overrides[0].match: Dictionary should have at least 1 item "
            "after validation, not 0",
        ),
        (
            "model: m\ntrack: stable\n"
            "overrides: [{name: a, match: {s: x}, pin: '1'}, {name: a, match: {s: y}, pin: '2'}]",
            "fleet.yaml, document 1 (demo): spec.overrides[1].name: 'a' is also overrides[0]'s name",
        ),
        (
            "model: m\ntrack: stable\n"
            "overrides: [{name: a, match: {s: x}, pin: '1'}, {name: b, match: {s: x, t: y}, pin: '2'}]",
            "fleet.yaml, document 1 (demo): spec.overrides[1].match: never applies: every device it matches also "
            "matches overrides[0] (a), which comes first",
        ),
        (
            "selector: {labels: {fleet: demo}}\nmodel: m\ntrack: stable\n"
            "overrides: [{name: a, match: {fleet: other}, pin: '1'}]",
            "fleet.yaml, document 1 (demo): spec.overrides[0].match.fleet: 'other' contradicts the selector's "
            "fleet='demo': the override can never apply",
        ),
        (
            "model: m\ntrack: stable\npromote: {from: stable, to: stable}",
            "fleet.yaml, document 1 (demo): spec.promote.to: promoting 'stable' to itself does nothing; "
            "name another alias",
        ),
        (
            "model: m\ntrack: stable\npromote: {from: candidate, to: production}",
            "fleet.yaml, document 1 (demo): spec.promote.from: promotion starts from the tracked alias 'stable', "
            "not 'candidate'",
        ),
        (
            "model: m\ntrack: stable\nrollout: {waves: [10, 50]}",
            "fleet.yaml, document 1 (demo): spec.rollout.waves: the last wave must be 100 percent, got 50.0",
        ),
        (
            "model: m\ntrack: stable\nrollout: {waves: [50, 10, 100]}",
            "fleet.yaml, document 1 (demo): spec.rollout.waves: wave percentages must be strictly increasing, "
            "got [50.0, 10.0, 100.0]",
        ),
        (
            "model: m\ntrack: stable\nrollout: {soak: 3 days}",
            "fleet.yaml, document 1 (demo): spec.rollout.soak: a number of seconds, or with s, m or h (90s, 5m, 1h)",
        ),
        (
            "model: m\ntrack: stable\nrollout: {maintenance_window: {start: 10:30, end: '12:00'}}",
            'fleet.yaml, document 1 (demo): spec.rollout.maintenance_window.start: write the time in quotes ("10:30"): '
            "YAML read it as the number 630",
        ),
        (
            "model: m\ntrack: stable\nrollout: {maintenance_window: {start: '01:00', end: '01:00'}}",
            "fleet.yaml, document 1 (demo): spec.rollout.maintenance_window.end: the window is empty (end = start); "
            "leave maintenance_window out to allow any time",
        ),
        (
            "model: m\ntrack: stable\n"
            "rollout: {maintenance_window: {start: '01:00', end: '02:00', timezone: Mars/Base}}",
            "fleet.yaml, document 1 (demo): spec.rollout.maintenance_window.timezone: unknown time zone 'Mars/Base'; "
            "use an IANA name such as UTC or Europe/Berlin",
        ),
        (
            "model: m\ntrack: stable\nrollout: {gates: [error_rate=0.05]}",
            "fleet.yaml, document 1 (demo): spec.rollout.gates[0]: gate 'error_rate=0.05': use METRIC OP VALUE, "
            "e.g. error_rate<=0.05, latency_p95_ms<=+10%, latency_p95_ms<=+2ms, latency_p95_ms<=x1.1 "
            "(optionally @MIN_SAMPLES)",
        ),
        (
            "model: m\ntrack: stable\nrollout: {gates: [{metric: joy, comparator: '>', threshold: 1}]}",
            "fleet.yaml, document 1 (demo): spec.rollout.gates[0].metric: unknown gate metric 'joy'; use one of "
            "error_rate, latency_p50_ms, latency_p95_ms, latency_p99_ms, shadow_agreement, cpu_percent, ram_mb "
            "or output.<stat>",
        ),
        (
            "model: m\ntrack: 1.0.0",
            "fleet.yaml, document 1 (demo): spec.track: an alias starts with a lower-case letter (e.g. stable) and has "
            "at most 63 of a-z 0-9 _ -; a name that starts with a digit is a version",
        ),
        (
            "model: m\ntrack: stable\ncolour: blue",
            "fleet.yaml, document 1 (demo): spec.colour: Extra inputs are not permitted",
        ),
        (
            "model: m\ntrack: stable\noverrides: [{name: a, match: {s: x}, config: {when: 2024-01-01}}]",
            "fleet.yaml, document 1 (demo): spec.overrides[0].config.when: not a JSON value (date); "
            "quote it to make it a string",
        ),
        (
            "model: m\ntrack: stable\noverrides: [{name: a, match: {s: x}, config: {v: [1, .inf]}}]",
            "fleet.yaml, document 1 (demo): spec.overrides[0].config.v[1]: numbers must be finite, got inf",
        ),
    ],
)
def test_a_blueprint_that_contradicts_itself_is_refused_with_the_field_and_the_reason(spec: str, message: str) -> None:
    assert refused(doc(spec)) == message


def test_a_config_over_the_limit_is_refused_with_its_size() -> None:
    blob = "x" * MAX_CONFIG_BYTES
    spec = f"model: m\ntrack: stable\noverrides: [{{name: a, match: {{s: x}}, config: {{blob: {blob}}}}}]"
    assert refused(doc(spec)) == (
        f"fleet.yaml, document 1 (demo): spec.overrides[0].config: {MAX_CONFIG_BYTES + 11} bytes as JSON; "
        f"the limit is {MAX_CONFIG_BYTES} (settings, not data)"
    )


def test_a_config_at_the_limit_loads() -> None:
    padding = MAX_CONFIG_BYTES - len('{"blob":""}')
    spec = f"model: m\ntrack: stable\noverrides: [{{name: a, match: {{s: x}}, config: {{blob: {'x' * padding}}}}}]"
    assert load_blueprints(doc(spec))[0].spec.overrides[0].config == {"blob": "x" * padding}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "fleet.yaml: no blueprint in it"),
        ("---\n---\n", "fleet.yaml: no blueprint in it"),
        ("a: [1\n", "fleet.yaml: not YAML: line 2, column 1: expected ',' or ']', but got '<stream end>'"),
        (
            "- 1\n- 2\n",
            "fleet.yaml, document 1: a blueprint is a mapping (apiVersion, kind, metadata, spec), not a list",
        ),
        (
            "apiVersion: slmops.dev/v2\nkind: Blueprint\nmetadata: {name: x}\nspec: {model: m, track: stable}\n",
            "fleet.yaml, document 1 (x): apiVersion: Input should be 'slmops.dev/v1'",
        ),
        (
            "apiVersion: slmops.dev/v1\nkind: Blueprint\nmetadata: {name: Demo Fleet}\n"
            "spec: {model: m, track: stable}\n",
            "fleet.yaml, document 1 (Demo Fleet): metadata.name: String should match pattern "
            "'^[a-z0-9][a-z0-9_\\-]{0,62}$'",
        ),
        (
            "kind: Blueprint\nmetadata: {name: x}\n",
            "fleet.yaml, document 1 (x): apiVersion: Field required\nfleet.yaml, document 1 (x): spec: Field required",
        ),
    ],
)
def test_a_file_that_is_not_blueprints_is_refused(text: str, message: str) -> None:
    assert refused(text) == message


def test_a_document_that_aliases_expand_beyond_the_limit_is_refused() -> None:
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(6)
    )
    assert refused(laughs) == f"fleet.yaml: a document expands to more than {MAX_NODES} values (YAML aliases?)"


def test_a_file_over_the_size_limit_is_refused() -> None:
    assert refused("#" * (MAX_FILE_BYTES + 1)) == f"fleet.yaml: {MAX_FILE_BYTES + 1} bytes; at most {MAX_FILE_BYTES}"


def test_every_problem_of_every_document_is_reported_at_once() -> None:
    bad = "model: m\ntrack: stable\nrollout: {gates: [nonsense], soak: soon}"
    text = doc(bad) + "---\n" + doc("model: M\ntrack: stable", head=HEAD.replace("demo", "two"))
    assert refused(text).splitlines() == [
        "fleet.yaml, document 1 (demo): spec.rollout.gates[0]: gate 'nonsense': use METRIC OP VALUE, e.g. "
        "error_rate<=0.05, latency_p95_ms<=+10%, latency_p95_ms<=+2ms, latency_p95_ms<=x1.1 (optionally @MIN_SAMPLES)",
        "fleet.yaml, document 1 (demo): spec.rollout.soak: a number of seconds, or with s, m or h (90s, 5m, 1h)",
        "fleet.yaml, document 2 (two): spec.model: String should match pattern '^[a-z0-9][a-z0-9_\\-]{0,62}$'",
    ]


def test_the_problems_reported_are_capped() -> None:
    text = "".join("---\n" + doc("model: M\ntrack: stable", head=HEAD.replace("demo", f"d{i}")) for i in range(30))
    assert len(refused(text).splitlines()) == MAX_PROBLEMS


def test_two_documents_with_one_name_are_refused() -> None:
    text = doc("model: m\ntrack: stable") + "---\n" + doc("model: n\ntrack: stable")
    assert refused(text) == (
        "fleet.yaml, document 2 (demo): metadata.name: document 1 has this name too; a name is one blueprint"
    )


def test_the_problems_carry_document_path_and_reason() -> None:
    with pytest.raises(InvalidBlueprint) as caught:
        load_blueprints(doc("model: m\ntrack: stable\npriority: -1"), source="f.yaml")
    [problem] = caught.value.problems
    assert (caught.value.source, problem.document, problem.blueprint, problem.path) == (
        "f.yaml",
        1,
        "demo",
        "spec.priority",
    )
    assert problem.reason == "Input should be greater than or equal to 0"


@pytest.mark.parametrize(
    ("spec", "catalogue", "message"),
    [
        (
            "model: m\ntrack: stable\nprofiles: {rpi5: rpi5-4gb}",
            CATALOGUE,
            "fleet.yaml, document 1 (demo): spec.profiles.rpi5: unknown profile 'rpi5-4gb'; "
            "known: gateway, jetson, rpi5",
        ),
        (
            "model: m\ntrack: stable\nprofiles: {toaster: rpi5}",
            CATALOGUE,
            "fleet.yaml, document 1 (demo): spec.profiles.toaster: unknown device class 'toaster'; "
            "known: gateway, jetson, rpi5",
        ),
        (
            "model: m\ntrack: stable\nprofiles: {jetson: rpi5}",
            CATALOGUE,
            "fleet.yaml, document 1 (demo): spec.profiles.jetson: profile 'rpi5' is for class rpi5, not jetson",
        ),
        (
            "selector: {device_classes: [rpi5, phone]}\nmodel: m\ntrack: stable",
            CATALOGUE,
            "fleet.yaml, document 1 (demo): spec.selector.device_classes[1]: unknown device class 'phone'; "
            "known: gateway, jetson, rpi5",
        ),
        (
            "model: m\ntrack: stable",
            Catalogue(device_classes=frozenset(), profiles={}, models=frozenset({"tiny"})),
            "fleet.yaml, document 1 (demo): spec.model: no model 'm' is registered",
        ),
        (
            "model: m\ntrack: stable\noverrides: [{name: a, match: {s: x}, rollout: {gates: ['output.norm<=2']}}]",
            Catalogue(device_classes=frozenset(), profiles={}, gate_metrics=frozenset({"error_rate"})),
            "fleet.yaml, document 1 (demo): spec.overrides[0].rollout.gates[0].metric: unknown gate metric "
            "'output.norm'; known: error_rate",
        ),
    ],
)
def test_what_the_catalogue_does_not_know_is_refused(spec: str, catalogue: Catalogue, message: str) -> None:
    assert refused(doc(spec), catalogue) == message


def test_a_profile_for_a_class_the_selector_excludes_is_refused_without_a_catalogue() -> None:
    spec = "selector: {device_classes: [rpi5]}\nmodel: m\ntrack: stable\nprofiles: {jetson: jetson}"
    assert refused(doc(spec)) == (
        "fleet.yaml, document 1 (demo): spec.profiles.jetson: the selector selects only classes rpi5: "
        "this profile is never used"
    )


def test_a_stored_blueprint_is_rechecked_when_the_catalogue_changes() -> None:
    stored = blueprint("demo", profiles={"rpi5": "rpi5"})
    assert check_against(stored, CATALOGUE) == []
    shrunk = Catalogue(device_classes=CATALOGUE.device_classes, profiles={"jetson": "jetson"})
    assert check_against(stored, shrunk) == [("spec.profiles.rpi5", "unknown profile 'rpi5'; known: jetson")]
