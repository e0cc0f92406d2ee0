"""The blueprints client (shared/clients/blueprints.py): each method asks its operation's subject and
returns the typed reply; no service, an error reply and an oversized request become the platform's errors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from nats.aio.client import Client
from nats.errors import MaxPayloadError, NoRespondersError

from shared.bus import BusError
from shared.clients.blueprints import BlueprintsClient
from shared.errors import InvalidRequest, NotFound
from shared.messages.blueprint import Blueprint
from shared.messages.blueprint_api import (
    APPLY_BLUEPRINTS,
    DELETE_BLUEPRINT,
    GET_BLUEPRINT,
    LIST_BLUEPRINTS,
    AppliedBlueprint,
    ApplyResult,
    BlueprintDetail,
    BlueprintSummary,
    StoredBlueprint,
)
from shared.messages.rpc import error_reply

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BLUEPRINT = Blueprint.model_validate(
    {
        "apiVersion": "slmops.dev/v1",
        "kind": "Blueprint",
        "metadata": {"name": "demo"},
        "spec": {"model": "tiny-embedder", "track": "stable"},
    }
)


@dataclass
class Reply:
    data: bytes


class Connection:
    """Answers every request with `answer` (bytes) or raises it (an exception), and keeps what was asked."""

    max_payload = 1024 * 1024

    def __init__(self, answer: bytes | Exception) -> None:
        self.answer = answer
        self.asked: list[tuple[str, dict[str, Any]]] = []

    async def request(self, subject: str, payload: bytes, *, timeout: float, headers: dict[str, str]) -> Reply:
        self.asked.append((subject, json.loads(payload)))
        if isinstance(self.answer, Exception):
            raise self.answer
        return Reply(self.answer)


def client(answer: bytes | Exception) -> tuple[BlueprintsClient, Connection]:
    nc = Connection(answer)
    return BlueprintsClient(cast(Client, nc), source="tests"), nc


async def test_apply_sends_the_blueprints_with_dry_run_and_source_and_returns_the_result() -> None:
    result = ApplyResult(
        dry_run=True, blueprints=[AppliedBlueprint(name="demo", action="created", generation=1)], groups=[]
    )
    blueprints, nc = client(APPLY_BLUEPRINTS.answer(result))
    assert await blueprints.apply([BLUEPRINT], dry_run=True, source_file="fleet.yaml") == result
    (subject, envelope), *_ = nc.asked
    assert subject == "slmops.rpc.blueprints.apply" and envelope["source"] == "tests"
    assert envelope["data"]["dry_run"] is True and envelope["data"]["source"] == "fleet.yaml"
    assert envelope["data"]["blueprints"][0]["metadata"]["name"] == "demo"


async def test_list_get_and_delete_ask_their_own_subjects() -> None:
    summary = BlueprintSummary(
        name="demo", model="m", track="stable", priority=0, generation=1, devices=0, lost=0, summary="", applied_at=T0
    )
    blueprints, nc = client(LIST_BLUEPRINTS.answer([summary]))
    assert await blueprints.list() == [summary]
    stored = StoredBlueprint(blueprint=BLUEPRINT, generation=1, digest="d" * 64, applied_at=T0)
    detail = BlueprintDetail(stored=stored, devices=0, lost={}, lost_count=0, groups=[])
    blueprints, nc_get = client(GET_BLUEPRINT.answer(detail))
    assert await blueprints.get("demo") == detail
    deleted = AppliedBlueprint(name="demo", action="deleted", generation=0)
    blueprints, nc_delete = client(DELETE_BLUEPRINT.answer(deleted))
    assert await blueprints.delete("demo") == deleted
    assert [nc.asked[0][0], nc_get.asked[0][0], nc_delete.asked[0][0]] == [
        "slmops.rpc.blueprints.list",
        "slmops.rpc.blueprints.get",
        "slmops.rpc.blueprints.delete",
    ]


async def test_no_service_is_a_bus_error_that_names_it() -> None:
    blueprints, _ = client(NoRespondersError())
    with pytest.raises(BusError, match="no blueprints service is answering on slmops.rpc.blueprints.list"):
        await blueprints.list()


@pytest.mark.parametrize(("code", "error"), [("invalid_request", InvalidRequest), ("not_found", NotFound)])
async def test_a_refusal_is_raised_with_the_service_s_message_and_code(code: str, error: type[Exception]) -> None:
    blueprints, _ = client(error_reply(code, "fleet.yaml, document 1 (demo): spec.model: no model 'x'"))
    with pytest.raises(error, match="spec.model: no model 'x'") as raised:
        await blueprints.apply([BLUEPRINT])
    assert getattr(raised.value, "remote_code", None) == code


async def test_a_request_over_the_bus_s_message_limit_is_refused_as_too_large() -> None:
    blueprints, _ = client(MaxPayloadError())
    with pytest.raises(InvalidRequest, match="the apply request is .* bytes; the bus takes at most 1048576"):
        await blueprints.apply([BLUEPRINT])
