"""Payload pieces shared by several services' messages."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

SHA256_HEX = r"^[0-9a-f]{64}$"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,62}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$"

# Application settings (`Config`): a blueprint override's, a rollout's, a desired state's.
MAX_CONFIG_BYTES = 16 * 1024  # as compact UTF-8 JSON: settings, not data
MAX_CONFIG_DEPTH = 16


class Frozen(BaseModel):
    """Strict, immutable value object (not itself a message); no NaN or infinity in any float, since
    JSON has no such numbers and a NaN compares unequal to itself (a record no lookup finds)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ObjectRef(Frozen):
    """An object in S3. `bucket` defaults to the platform's artifact bucket."""

    key: str = Field(min_length=1, max_length=1024)
    bucket: str | None = Field(default=None, min_length=3, max_length=63)


class CommandOutcome(Frozen):
    """Sent (best effort, core NATS) to the `Slmops-Reply-To` inbox a command carried, once decided.

    Commands travel through a durable work-queue stream, so a sender that wants to wait for the
    result names an inbox in a header instead of using request/reply; the durable event stream
    stays the record of what happened.
    """

    schema_version: Literal[1] = 1
    command_id: str
    status: Literal["applied", "unchanged", "rejected"]
    reason: str | None = None
    result: dict[str, Any] = Field(default_factory=dict)


# --- application settings ----------------------------------------------------------------------


def _json_problem(value: object, loc: tuple[str | int, ...], depth: int) -> tuple[tuple[str | int, ...], str] | None:
    """The first thing in `value` that is not plain, finite, shallow JSON, with where it is."""
    if depth > MAX_CONFIG_DEPTH:
        return loc, f"nested deeper than {MAX_CONFIG_DEPTH} levels"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return loc, f"keys must be strings, got {key!r}"
            found = _json_problem(item, (*loc, key), depth + 1)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _json_problem(item, (*loc, i), depth + 1)
            if found:
                return found
    elif isinstance(value, float) and not math.isfinite(value):
        return loc, f"numbers must be finite, got {value}"
    elif not (value is None or isinstance(value, str | int | float | bool)):
        return loc, f"not a JSON value ({type(value).__name__}); quote it to make it a string"
    return None


def _config(value: dict[str, Any]) -> dict[str, Any]:
    found = _json_problem(value, (), 1)
    if found:
        loc, reason = found
        # A located error below the validated value, so the message names the exact field
        # (`spec.overrides[0].config.v[1]`), not only the settings that hold it.
        raise ValidationError.from_exception_data(
            "Config", [InitErrorDetails(type=PydanticCustomError("config", reason), loc=loc, input=None)]
        )
    try:
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800"): no UTF-8, so no digest either
        raise PydanticCustomError("config_unicode", "strings must be valid Unicode (a lone surrogate is not)") from None
    if size > MAX_CONFIG_BYTES:
        raise PydanticCustomError(
            "config_size", f"{size} bytes as JSON; the limit is {MAX_CONFIG_BYTES} (settings, not data)"
        )
    return value


Config = Annotated[dict[str, Any], AfterValidator(_config)]
"""Application settings delivered with a model to a device, opaque to the platform: a JSON object of
at most `MAX_CONFIG_BYTES` (compact UTF-8) and `MAX_CONFIG_DEPTH` levels, finite numbers only."""


def config_digest(config: Mapping[str, Any]) -> str:
    """The settings' identity: sha256 (hex) of their canonical JSON (sorted keys, no spaces, UTF-8),
    so equal settings have one digest whatever their key order, on the platform and on a device."""
    canonical = json.dumps(config, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
