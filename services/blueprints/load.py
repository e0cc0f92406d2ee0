"""Reading blueprint files: YAML text -> checked `Blueprint`s, or every problem with its field path.

A file holds one or more YAML documents (`---` between them), each a blueprint. Loading is all or
nothing: a file with one bad document is refused as a whole, so `slmops apply -f` never stores half
of what someone meant. Every problem is reported at once (up to `MAX_PROBLEMS`), each as
`FILE, document N (NAME): spec.overrides[0].config: REASON`, because fixing a file one error per
run is slow. Inputs are bounded (`MAX_FILE_BYTES`, `MAX_DOCUMENTS`, `MAX_NODES` after YAML aliases),
as every input of the platform is.

Three layers of checks, in order:
1. YAML (`yaml.safe_load_all`: no tags that build objects) and one mapping per document;
2. the resource itself (`shared.messages.blueprint`): what a blueprint alone can tell; gates
   written in the CLI's notation (`error_rate<=0.05@50`) are expanded first, by the parser
   `slmops rollout start --gate` uses, so both accept exactly the same gates;
3. with a `Catalogue`, what the platform knows: device classes, profiles (and the class each
   profile is for), models, gate metrics. The catalogue is plain data, so the caller decides where
   it comes from (deploy/profiles, the registry) and this module does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from services.blueprints.errors import InvalidBlueprint, Problem
from shared.messages.blueprint import Blueprint, RolloutPolicy
from shared.notation import OptionError, parse_gate

MAX_PROBLEMS = 20
MAX_DOCUMENTS = 100
MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 100_000  # values in one document once YAML aliases are expanded


@dataclass(frozen=True, kw_only=True)
class Catalogue:
    """What a blueprint may name, as the platform knows it.

    Args:
        device_classes: the classes devices report (`deploy/profiles/*.yaml`'s `device_class`).
        profiles: optimization profile name -> the device class it is measured for.
        models: registered model names; None = not checked (e.g. `diff` before the model is pushed).
        gate_metrics: metrics gates may use; None = whatever `Gate` accepts (including `output.*`).
    """

    device_classes: frozenset[str]
    profiles: Mapping[str, str]
    models: frozenset[str] | None = None
    gate_metrics: frozenset[str] | None = None


def load_blueprints(text: str, *, source: str = "<input>", catalogue: Catalogue | None = None) -> list[Blueprint]:
    """Every blueprint in `text`, in file order, checked against `catalogue` when one is given.

    Args:
        text: the file's content.
        source: how to name the file in messages (its path, or `<stdin>`).
        catalogue: what the platform knows; None checks the file on its own.

    Raises:
        InvalidBlueprint: anything wrong, all problems found, each with its document and field path.
    """
    if len(text.encode()) > MAX_FILE_BYTES:
        raise _file_problem(source, f"{len(text.encode())} bytes; at most {MAX_FILE_BYTES}")
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise _file_problem(source, _yaml_reason(exc)) from None
    problems: list[Problem] = []
    blueprints: list[Blueprint] = []
    seen: dict[str, int] = {}
    numbered = [(n, doc) for n, doc in enumerate(documents, start=1) if doc is not None]
    if not numbered:
        raise _file_problem(source, "no blueprint in it")
    if len(numbered) > MAX_DOCUMENTS:
        raise _file_problem(source, f"{len(numbered)} documents; at most {MAX_DOCUMENTS}")
    if any(_exceeds(doc, MAX_NODES) for _, doc in numbered):
        # YAML aliases can make a small file expand into an enormous document ("billion laughs").
        raise _file_problem(source, f"a document expands to more than {MAX_NODES} values (YAML aliases?)")
    for n, doc in numbered:
        name = _name_of(doc)
        blueprint, found = _load_document(doc, catalogue)
        problems += [Problem(document=n, blueprint=name, path=path, reason=reason) for path, reason in found]
        if blueprint is None:
            continue
        if blueprint.name in seen:
            problems.append(
                Problem(
                    document=n,
                    blueprint=name,
                    path="metadata.name",
                    reason=f"document {seen[blueprint.name]} has this name too; a name is one blueprint",
                )
            )
        seen.setdefault(blueprint.name, n)
        blueprints.append(blueprint)
    if problems:
        raise InvalidBlueprint(source, problems[:MAX_PROBLEMS])
    return blueprints


def check_against(blueprint: Blueprint, catalogue: Catalogue) -> list[tuple[str, str]]:
    """(field path, reason) for everything `blueprint` names that `catalogue` does not know.

    Separate from loading so a service can re-check stored blueprints when the catalogue changes
    (a profile file removed, a model deleted).
    """
    spec = blueprint.spec
    found: list[tuple[str, str]] = []
    if catalogue.models is not None and spec.model not in catalogue.models:
        found.append(("spec.model", f"no model {spec.model!r} is registered"))
    for i, device_class in enumerate(spec.selector.device_classes):
        if device_class not in catalogue.device_classes:
            found.append(
                (f"spec.selector.device_classes[{i}]", _unknown("device class", device_class, catalogue.device_classes))
            )
    for device_class, profile in spec.profiles.items():
        path = f"spec.profiles.{device_class}"
        if device_class not in catalogue.device_classes:
            found.append((path, _unknown("device class", device_class, catalogue.device_classes)))
        elif profile not in catalogue.profiles:
            found.append((path, _unknown("profile", profile, catalogue.profiles)))
        elif catalogue.profiles[profile] != device_class:
            found.append((path, f"profile {profile!r} is for class {catalogue.profiles[profile]}, not {device_class}"))
    if catalogue.gate_metrics is not None:
        for prefix, policy in _policies(blueprint):
            for i, gate in enumerate(policy.gates):
                if gate.metric not in catalogue.gate_metrics:
                    found.append(
                        (f"{prefix}.gates[{i}].metric", _unknown("gate metric", gate.metric, catalogue.gate_metrics))
                    )
    return found


def _load_document(doc: object, catalogue: Catalogue | None) -> tuple[Blueprint | None, list[tuple[str, str]]]:
    """The blueprint in one document, or None, and (path, reason) for each problem found."""
    if not isinstance(doc, dict):
        return None, [("", f"a blueprint is a mapping (apiVersion, kind, metadata, spec), not {_kind(doc)}")]
    expanded, notation = _expanded(doc)
    try:
        blueprint = Blueprint.model_validate(expanded)
    except ValidationError as exc:
        # A gate whose notation did not parse is reported once, as that, not also as "not an object".
        found = [(_path(error["loc"]), _reason(error["msg"])) for error in exc.errors()]
        return None, notation + [(p, r) for p, r in found if not any(_within(p, q) for q, _ in notation)]
    found = check_against(blueprint, catalogue) if catalogue is not None else []
    return (None, found) if found else (blueprint, [])


def _expanded(doc: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A copy of the document with every gate written in notation replaced by its object, and
    (path, reason) for each that does not parse (left as it was). `doc` is not changed."""
    out = _copy(doc)
    problems = []
    for path, gates in _gate_lists(out):
        for i, gate in enumerate(gates):
            if isinstance(gate, str):
                try:
                    gates[i] = parse_gate(gate).model_dump()
                except OptionError as exc:
                    problems.append((f"{path}[{i}]", str(exc)))
    return out, problems


def _gate_lists(doc: Mapping[str, Any]) -> Iterator[tuple[str, list[Any]]]:
    """(path, list) of every `gates` list in the document, where the structure is as expected (a
    malformed structure is left to the model's validation, which names it)."""
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return
    rollout = spec.get("rollout")
    if isinstance(rollout, dict) and isinstance(rollout.get("gates"), list):
        yield "spec.rollout.gates", rollout["gates"]
    overrides = spec.get("overrides")
    if isinstance(overrides, list):
        for i, override in enumerate(overrides):
            rollout = override.get("rollout") if isinstance(override, dict) else None
            if isinstance(rollout, dict) and isinstance(rollout.get("gates"), list):
                yield f"spec.overrides[{i}].rollout.gates", rollout["gates"]


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _within(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


def _policies(blueprint: Blueprint) -> Iterator[tuple[str, RolloutPolicy]]:
    yield "spec.rollout", blueprint.spec.rollout
    for i, override in enumerate(blueprint.spec.overrides):
        if override.rollout is not None:
            yield f"spec.overrides[{i}].rollout", override.rollout


def _file_problem(source: str, reason: str) -> InvalidBlueprint:
    return InvalidBlueprint(source, [Problem(document=None, blueprint=None, path="", reason=reason)])


def _exceeds(value: object, limit: int) -> bool:
    """Whether `value` holds more than `limit` values, counting a shared one each time it appears;
    stops counting at the limit, so it is cheap on exactly the documents it refuses."""
    budget = limit
    stack = [value]
    while stack:
        item = stack.pop()
        budget -= 1
        if budget < 0:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _name_of(doc: object) -> str | None:
    if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict):
        name = doc["metadata"].get("name")
        return name if isinstance(name, str) else None
    return None


def _path(loc: Sequence[str | int]) -> str:
    """pydantic's location -> `spec.overrides[0].config`."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _reason(message: str) -> str:
    # pydantic prefixes a validator's ValueError with "Value error, ": noise for a reader of a file.
    return message.removeprefix("Value error, ")


def _unknown(what: str, value: str, known: Mapping[str, object] | frozenset[str]) -> str:
    return f"unknown {what} {value!r}; known: {', '.join(sorted(known)) or 'none'}"


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"not YAML: {problem}"
    return f"not YAML: line {mark.line + 1}, column {mark.column + 1}: {problem}"
