"""JSON Schema for every message on the bus, generated from the pydantic models.

Other systems (and devices written in other languages) validate against these files instead of
reading our code. Each file describes the whole envelope with `type` and `schema_version` pinned
and `data` = that payload, so one file is enough to check a message off the wire. Beside them:
`kv.*` for the KV values third parties read, and `resource.*` for the files operators write
(a blueprint), which an editor can validate a file against. The output is deterministic (sorted
keys, sorted files) so it can be committed and diffed in review.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import shared.messages  # noqa: F401  (importing the package registers every payload type)
from shared.messages.blueprint import blueprint_json_schema
from shared.messages.blueprint_api import BlueprintStatus, StoredBlueprint
from shared.messages.common import Frozen
from shared.messages.device import DesiredState
from shared.messages.envelope import Message, message_types, wire_model
from shared.messages.inventory import DeviceRecord
from shared.messages.rollout_record import RolloutRecord

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Values that live in KV buckets without an envelope but that third parties read: file stem -> model.
RECORDS: dict[str, type[Frozen]] = {
    "kv.desired.v1": DesiredState,
    "kv.devices.v1": DeviceRecord,
    "kv.rollouts.v1": RolloutRecord,
    "kv.blueprints.spec.v1": StoredBlueprint,
    "kv.blueprints.status.v1": BlueprintStatus,
}

# Resources: documents written in files and applied (`slmops apply -f`), no envelope; each module
# builds its own schema (`$id` urn:slmops:resource:...), since a file may say more than the stored form.
RESOURCES: dict[str, Callable[[], dict[str, Any]]] = {
    "resource.blueprint.v1": blueprint_json_schema,
}


def export_json_schemas(directory: Path) -> list[Path]:
    """Write `<type>.v<schema_version>.json` for every registered message, plus the KV `RECORDS`
    and the `RESOURCES`.

    Args:
        directory: where to write; created if missing. Other files in it are left alone.

    Returns:
        The files written, sorted by name.
    """
    documents = {f"{t}.v{v}": _envelope_schema(t, v, model) for (t, v), model in message_types().items()}
    documents |= {stem: _record_schema(stem, model) for stem, model in RECORDS.items()}
    documents |= {stem: schema() for stem, schema in RESOURCES.items()}
    return write_documents(directory, documents)


def write_documents(directory: Path, documents: dict[str, dict[str, Any]]) -> list[Path]:
    """Write each document as `<name>.json`, keys sorted, so the files diff cleanly under review.

    Returns:
        The files written, sorted by name. Other files in `directory` are left alone.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in sorted(documents):
        path = directory / f"{name}.json"
        path.write_text(json.dumps(documents[name], indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written


def _envelope_schema(type_: str, version: int, model: type[Message]) -> dict[str, Any]:
    schema = wire_model(model).model_json_schema()
    schema["$schema"] = JSON_SCHEMA_DIALECT
    schema["$id"] = f"urn:slmops:message:{type_}:v{version}"
    schema["title"] = f"{type_} v{version}"
    schema["description"] = _first_paragraph(model) or f"The {type_!r} message."
    return schema


def _record_schema(stem: str, model: type[Frozen]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema["$schema"] = JSON_SCHEMA_DIALECT
    schema["$id"] = f"urn:slmops:record:{stem}"
    return schema


def _first_paragraph(model: type[Message]) -> str:
    return (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
