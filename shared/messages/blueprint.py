"""The `Blueprint` resource: a fleet's intended state, as a file that is applied, diffed and reconciled.

    apiVersion: slmops.dev/v1
    kind: Blueprint
    metadata: {name: demo-fleet}
    spec:
      selector: {labels: {fleet: demo}}        # which devices (shared.messages.rollout.Selector)
      model: tiny-embedder
      track: candidate                         # the alias the blueprint follows
      profiles: {rpi5: rpi5, jetson: jetson}   # device class -> optimization profile
      rollout: {waves: [10, 50, 100], soak: 30s, gates: [...], max_download_rate: 50}
      priority: 10                             # the highest priority owns a device; ties are refused
      promote: {from: candidate, to: stable, after: rollout_completed}
      overrides:                               # first match, in declaration order
        - {name: site-berlin, match: {site: berlin}, pin: "1.0.0", config: {lang: de}}

Everything a blueprint alone can tell is checked here, with the field's path, so a file that
contradicts itself is refused before it is stored: an override that pins a version *and* sets a
rollout policy (a pin is not rolled out by policy), one that does nothing, one that can never apply
(its match contradicts the selector, or an earlier override catches every device it matches),
duplicate override names, a promotion that does not start from the tracked alias, waves that do
not reach 100 %, a `config` over `MAX_CONFIG_BYTES`. What needs the platform's catalogue (known
device classes, profiles, models, metrics) or the inventory is checked by `services/blueprints`.

Gates are stored as `Gate` objects; a file may write one in the CLI's notation
(`error_rate<=0.05@50`), which the loader expands first, exactly as `slmops rollout start --gate`
does. Durations are seconds, or a string with s, m or h (`90s`, `5m`); the stored form is seconds.
A blueprint is a resource, not a bus message: it has no envelope, and the JSON Schema for files
and stored records is `blueprint_json_schema()`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.messages.common import MAX_CONFIG_BYTES, NAME_PATTERN, Config, Frozen
from shared.messages.device import Labels
from shared.messages.registry import Alias, Version
from shared.messages.rollout import MAX_GATES, MAX_SELECTOR_VALUES, MAX_WAVES, Gate, Selector

API_VERSION = "slmops.dev/v1"
KIND = "Blueprint"
SCHEMA_ID = "urn:slmops:resource:blueprint:v1"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Caps, so a stored blueprint stays a small KV value and reconciling one stays cheap.
MAX_OVERRIDES = 64
MAX_PRIORITY = 1_000_000
MAX_DESCRIPTION_CHARS = 2000
DEFAULT_WAVES = (1.0, 10.0, 50.0, 100.0)
DEFAULT_SOAK_SECONDS = 300.0  # as `slmops rollout start`

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(s|m|h)?\s*$")
_DURATION_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600}
_CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Percent = Annotated[float, Field(gt=0, le=100)]


def _fail(loc: tuple[str | int, ...], reason: str) -> ValidationError:
    """A validation error at `loc` below the validated value, so the error names the exact field
    (`spec.overrides[2].name`) rather than the model that noticed the problem."""
    return ValidationError.from_exception_data(
        "Blueprint", [InitErrorDetails(type=PydanticCustomError("blueprint", reason), loc=loc, input=None)]
    )


def _seconds(value: object) -> object:
    """`90`, `90s`, `5m`, `1h` -> seconds; anything else is left for the float check to refuse."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise PydanticCustomError("duration", "a number of seconds, or with s, m or h (90s, 5m, 1h)")
        return float(match[1]) * _DURATION_UNITS[match[2]]
    return value


def _not_a_yaml_number(what: str, example: str) -> BeforeValidator:
    """YAML reads `1.0` and `10:30` as numbers (the latter in base 60: 630); say so instead of
    pydantic's bare "should be a valid string", since the fix is the quotes."""

    def check(value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise PydanticCustomError(
                "quote", f"write the {what} in quotes ({example}): YAML read it as the number {value}"
            )
        return value

    return BeforeValidator(check)


Duration = Annotated[
    float,
    BeforeValidator(_seconds),
    Field(ge=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": _DURATION.pattern},
            ],
            "description": "seconds, or a number with s, m or h (90s, 5m, 1h)",
        }
    ),
]
Clock = Annotated[str, _not_a_yaml_number("time", '"10:30"'), StringConstraints(pattern=_CLOCK)]
PinnedVersion = Annotated[Version, _not_a_yaml_number("version", '"1.0"')]


def _gates_in_files(schema: dict[str, Any]) -> None:
    """A file may write a gate in the CLI's notation, which the loader expands: the published schema
    says so, so that an editor validating a file against it accepts what `apply` accepts."""
    schema["items"] = {
        "anyOf": [
            schema["items"],
            {"type": "string", "description": "METRIC OP VALUE[@MIN_SAMPLES], e.g. error_rate<=0.05@50"},
        ]
    }


class MaintenanceWindow(Frozen):
    """When a rollout may write desired states: every day from `start` to `end` in `timezone`.

    A window may cross midnight (`22:00`-`04:00`). Outside it a rollout waits, it does not fail:
    devices are told to install only when their operators agreed to it.
    """

    start: Clock = Field(description="HH:MM, 24-hour")
    end: Clock = Field(description="HH:MM, 24-hour; before start = the window crosses midnight")
    timezone: str = Field(default="UTC", min_length=1, max_length=64, description="an IANA name, e.g. Europe/Berlin")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError(
                "timezone", f"unknown time zone {value!r}; use an IANA name such as UTC or Europe/Berlin"
            ) from None
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> MaintenanceWindow:
        if self.start == self.end:
            raise _fail(("end",), "the window is empty (end = start); leave maintenance_window out to allow any time")
        return self


class RolloutPolicy(Frozen):
    """How a change reaches the devices: the waves, soak and gates of `slmops rollout start`, with its
    defaults, plus the download rate and maintenance window."""

    waves: list[Percent] = Field(
        default_factory=lambda: list(DEFAULT_WAVES),
        min_length=1,
        max_length=MAX_WAVES,
        description="cumulative percentages of the devices, strictly increasing, the last 100; stratified by class",
    )
    soak: Duration = Field(default=DEFAULT_SOAK_SECONDS, description="telemetry collected after a wave installs")
    gates: list[Gate] = Field(
        default_factory=list,
        max_length=MAX_GATES,
        description="checked after every wave",
        json_schema_extra=_gates_in_files,
    )
    install_threshold: float = Field(default=0.95, gt=0, le=1, description="share of a wave that must be active")
    max_download_rate: float | None = Field(
        default=None, gt=0, description="desired-state writes per second; null = unlimited"
    )
    maintenance_window: MaintenanceWindow | None = Field(default=None, description="null = any time")

    @field_validator("waves")
    @classmethod
    def _waves_climb_to_100(cls, waves: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(waves, waves[1:], strict=False)):
            raise PydanticCustomError("waves", f"wave percentages must be strictly increasing, got {waves}")
        if waves[-1] != 100:
            raise PydanticCustomError("waves", f"the last wave must be 100 percent, got {waves[-1]}")
        return waves


class Promotion(Frozen):
    """Move alias `to` to the version the tracked alias (`from`) delivered, once its rollout completes:
    what makes push -> optimize -> canary waves -> stable hands-off."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    from_: Alias = Field(alias="from", description="the alias whose rollout is promoted: the blueprint's track")
    to: Alias
    after: Literal["rollout_completed"] = "rollout_completed"

    @model_validator(mode="after")
    def _moves_somewhere(self) -> Promotion:
        if self.from_ == self.to:
            raise _fail(("to",), f"promoting {self.from_!r} to itself does nothing; name another alias")
        return self


class Override(Frozen):
    """A label-matched group of a blueprint's devices with its own version pin, rollout policy or settings.

    `rollout` replaces the blueprint's policy for the group as a whole (no field-by-field merge:
    what the group gets is what the override says). `config` is opaque to the platform and delivered
    with the model, for local applications.
    """

    name: Name
    match: Labels = Field(min_length=1, description="label -> required value; every one must hold")
    pin: PinnedVersion | None = Field(default=None, description="run this version, whatever the track says")
    rollout: RolloutPolicy | None = Field(default=None, description="null = the blueprint's policy")
    config: Config | None = Field(
        default=None, description=f"settings delivered with the model, at most {MAX_CONFIG_BYTES} bytes as JSON"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Override:
        if self.pin is not None and self.rollout is not None:
            raise _fail(
                ("rollout",),
                f"a pinned override ({self.pin}) is not rolled out by policy: remove pin or rollout",
            )
        if self.pin is None and self.rollout is None and self.config is None:
            raise _fail((), "the override changes nothing: give it a pin, a rollout or a config")
        return self


class Metadata(Frozen):
    name: Name = Field(description="the blueprint's key: applying a file with the same name replaces it")
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_CHARS)


class BlueprintSpec(Frozen):
    """What the selected devices should run and how changes reach them."""

    selector: Selector = Field(default_factory=Selector, description="which devices; empty = every device")
    model: Name
    track: Alias = Field(description="the alias this blueprint follows: when it moves, a rollout starts")
    profiles: dict[Name, Name] = Field(
        default_factory=dict,
        max_length=MAX_SELECTOR_VALUES,
        description="device class -> the optimization profile its variant is built with; a class without one "
        "gets the best registered variant it can run",
    )
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)
    priority: int = Field(default=0, ge=0, le=MAX_PRIORITY, description="the highest owns a device; ties are refused")
    promote: Promotion | None = None
    overrides: list[Override] = Field(default_factory=list, max_length=MAX_OVERRIDES)

    @model_validator(mode="after")
    def _consistent(self) -> BlueprintSpec:
        if self.promote is not None and self.promote.from_ != self.track:
            raise _fail(
                ("promote", "from"),
                f"promotion starts from the tracked alias {self.track!r}, not {self.promote.from_!r}",
            )
        classes = self.selector.device_classes
        for device_class in self.profiles:
            if classes and device_class not in classes:
                raise _fail(
                    ("profiles", device_class),
                    f"the selector selects only classes {', '.join(classes)}: this profile is never used",
                )
        for i, override in enumerate(self.overrides):
            self._check_override(i, override)
        return self

    def _check_override(self, i: int, override: Override) -> None:
        for j, earlier in enumerate(self.overrides[:i]):
            if earlier.name == override.name:
                raise _fail(("overrides", i, "name"), f"{override.name!r} is also overrides[{j}]'s name")
        for key, value in override.match.items():
            wanted = self.selector.labels.get(key)
            if wanted is not None and wanted != value:
                raise _fail(
                    ("overrides", i, "match", key),
                    f"{value!r} contradicts the selector's {key}={wanted!r}: the override can never apply",
                )
        for j, earlier in enumerate(self.overrides[:i]):
            if earlier.match.items() <= override.match.items():
                raise _fail(
                    ("overrides", i, "match"),
                    f"never applies: every device it matches also matches overrides[{j}] ({earlier.name}), "
                    "which comes first",
                )


class Blueprint(Frozen):
    """A fleet's intended state, as `slmops apply -f` stores it (module docstring: the shape and rules)."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    api_version: Literal["slmops.dev/v1"] = Field(alias="apiVersion")
    kind: Literal["Blueprint"]
    metadata: Metadata
    spec: BlueprintSpec

    @property
    def name(self) -> str:
        return self.metadata.name


def blueprint_json_schema() -> dict[str, Any]:
    """The JSON Schema of a blueprint document, as written in a file and as stored, for editors and
    other systems (a gate may be an object or, in a file, the CLI's notation)."""
    schema = Blueprint.model_json_schema(by_alias=True)
    schema["$schema"] = JSON_SCHEMA_DIALECT
    schema["$id"] = SCHEMA_ID
    schema["title"] = f"{KIND} {API_VERSION}"
    return schema
