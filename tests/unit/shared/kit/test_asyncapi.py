"""Each service's AsyncAPI document: generated from the kit's declarations, published in docs/asyncapi,
and describing real payloads (not FastStream's empty ones) and the replies of every operation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.discovery import load_service, service_names
from shared.kit.asyncapi import export_asyncapi, service_document

PUBLISHED = Path(__file__).resolve().parents[4] / "docs" / "asyncapi"


@pytest.fixture(scope="module")
def documents() -> dict[str, dict[str, Any]]:
    return {name: service_document(load_service(name)()) for name in service_names()}


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("%20", " ")]
    return node


def _payload(document: dict[str, Any], channel: str) -> dict[str, Any]:
    (message,) = document["channels"][channel]["messages"].values()
    return _resolve(document, _resolve(document, message["$ref"])["payload"]["$ref"])  # type: ignore[no-any-return]


def test_published_documents_are_current(tmp_path: Path) -> None:
    """docs/asyncapi is what other systems read; regenerate with `slmops schema export`."""
    fresh = {p.name: p.read_text() for p in export_asyncapi(tmp_path)}
    current = {p.name: p.read_text() for p in PUBLISHED.glob("*.json")}
    assert current == fresh, "docs/asyncapi is stale: run `slmops schema export`"


def test_every_installed_service_is_documented(documents: dict[str, dict[str, Any]]) -> None:
    assert {"registry", "optimizer"} <= set(documents)
    for name, document in documents.items():
        assert document["asyncapi"] == "3.0.0" and document["info"]["title"] == f"SLMOps {name}"


def test_the_command_channel_shows_every_accepted_envelope(documents: dict[str, dict[str, Any]]) -> None:
    registry = documents["registry"]
    assert registry["channels"]["registry commands"]["address"] == "slmops.cmd.model.>"
    payload = _payload(registry, "registry commands")
    envelopes = sorted(ref["$ref"].rsplit("/", 1)[1] for ref in payload["oneOf"])
    assert envelopes == ["RegisterModelEnvelope", "RegisterVariantEnvelope", "SetAliasEnvelope"]
    schema = registry["components"]["schemas"]["SetAliasEnvelope"]
    assert schema["properties"]["type"]["const"] == "model.alias.set"
    assert set(schema["required"]) == {"type", "schema_version", "id", "time", "source", "data"}
    assert "slmops.dlq.registry" in registry["channels"]["registry commands"]["description"]


def test_every_operation_documents_its_request_and_its_reply(documents: dict[str, dict[str, Any]]) -> None:
    registry = documents["registry"]
    for operation in ("list", "get", "aliases", "download_url", "public_key", "health"):
        op = registry["operations"][f"registry {operation}"]
        assert op["action"] == "receive"
        reply = _resolve(registry, op["reply"]["messages"][0]["$ref"])
        assert "payload" in _resolve(registry, reply["$ref"])
    get = _payload(registry, "registry get")
    assert get["properties"]["type"]["const"] == "registry.get"
    reply = registry["components"]["schemas"]["GetModelReply"]
    assert set(reply["properties"]) == {"schema_version", "ok", "result", "error"}


def test_events_and_commands_a_service_sends_are_send_operations(documents: dict[str, dict[str, Any]]) -> None:
    optimizer = documents["optimizer"]
    for channel in ("optimization.progress", "optimization.completed", "optimization.failed", "optimize.request"):
        assert optimizer["operations"][channel]["action"] == "send"
    completed = _payload(optimizer, "optimization.completed")
    assert completed["properties"]["type"]["const"] == "optimization.completed"
    followed = optimizer["channels"]["optimizer follows model.registered"]
    assert followed["address"] == "slmops.evt.model.registered"


def test_documents_are_deterministic(tmp_path: Path) -> None:
    first = {p.name: json.loads(p.read_text()) for p in export_asyncapi(tmp_path / "a")}
    second = {p.name: json.loads(p.read_text()) for p in export_asyncapi(tmp_path / "b")}
    assert first == second


def test_the_device_protocol_is_documented_from_the_device_side() -> None:
    device = json.loads((PUBLISHED / "device.json").read_text())
    actions = {name: op["action"] for name, op in device["operations"].items()}
    assert actions == {
        "device hello": "send",
        "device status": "send",
        "device telemetry": "send",
        "desired state": "receive",
        "registry download_url": "send",
    }
    assert device["channels"]["device status"]["address"] == "slmops.device.{device_id}.status"
    # A device asks on its own subject: the registry answers only for what its desired state names.
    assert device["channels"]["registry download_url"]["address"] == "slmops.rpc.registry.download_url.{device_id}"
    assert "device_id" in device["channels"]["desired state"]["parameters"]
    assert "reply" in device["operations"]["registry download_url"]
    window = device["components"]["schemas"]["TelemetryWindow"]
    assert window["additionalProperties"] is False, "aggregates only: no field outside the schema"


def test_the_documents_do_not_depend_on_the_exporting_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shell with NATS credentials or another server must export the same documents."""
    for name, value in {
        "SLMOPS_NATS_URL": "nats://elsewhere:4333",
        "SLMOPS_NATS_USER": "operator",
        "SLMOPS_NATS_PASSWORD": "secret",
        "SLMOPS_ACK_WAIT_SECONDS": "3",
        "SLMOPS_MAX_DELIVER": "2",
        "SLMOPS_OPTIMIZER_AUTO_PROFILES": "rpi5",
    }.items():
        monkeypatch.setenv(name, value)
    fresh = {p.name: p.read_text() for p in export_asyncapi(tmp_path)}
    assert fresh == {p.name: p.read_text() for p in PUBLISHED.glob("*.json")}
