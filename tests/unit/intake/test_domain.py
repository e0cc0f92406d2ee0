"""The intake's decisions about stored commands, as tables: who reads a subject, how long to wait,
what the sender is told."""

from __future__ import annotations

import json

import pytest

from services.intake.domain import (
    Claimed,
    Orphaned,
    Waiting,
    command_id,
    reply_inbox,
    unclaimed_since,
    verdict,
)
from shared import topology

DECLARED = (topology.REGISTRY_COMMANDS, topology.OPTIMIZER_COMMANDS)
REGISTRY_ON_SERVER = {"registry-commands": ["slmops.cmd.model.>"]}


@pytest.mark.parametrize(
    ("subject", "on_server", "expected"),
    [
        ("slmops.cmd.model.register", REGISTRY_ON_SERVER, Claimed("registry-commands")),
        ("slmops.cmd.model.alias.set", REGISTRY_ON_SERVER, Claimed("registry-commands")),
        # A consumer nobody declared still reads what it covers: never take its messages.
        ("slmops.cmd.rollout.start", {"rollout-commands": ["slmops.cmd.rollout.>"]}, Claimed("rollout-commands")),
        ("slmops.cmd.x.y", {"multi": ["slmops.cmd.a", "slmops.cmd.x.*"]}, Claimed("multi")),
        ("slmops.cmd.anything", {"everything": [">"]}, Claimed("everything")),
    ],
)
def test_a_subject_a_consumer_on_the_server_covers_is_left_alone(
    subject: str, on_server: dict[str, list[str]], expected: Claimed
) -> None:
    assert verdict(subject, on_server=on_server, declared=DECLARED, unclaimed_for=1e9, grace=60) == expected


def test_a_subject_nothing_covers_is_orphaned_at_once_with_the_reason() -> None:
    found = verdict(
        "slmops.cmd.modle.register", on_server=REGISTRY_ON_SERVER, declared=DECLARED, unclaimed_for=0.0, grace=60
    )
    assert found == Orphaned(
        "no service handles slmops.cmd.modle.register: no command consumer's filter covers it "
        "(declared: slmops.cmd.model.>, slmops.cmd.optimize.>)"
    )


def test_a_declared_family_without_its_consumer_waits_out_the_grace_period_then_is_orphaned() -> None:
    def at(seconds: float) -> Claimed | Waiting | Orphaned:
        return verdict(
            "slmops.cmd.optimize.request",
            on_server=REGISTRY_ON_SERVER,
            declared=DECLARED,
            unclaimed_for=seconds,
            grace=60,
        )

    assert at(0) == Waiting("optimizer-commands", remaining=60)
    assert at(59.5) == Waiting("optimizer-commands", remaining=0.5)
    orphaned = at(60)
    assert isinstance(orphaned, Orphaned)
    assert orphaned.reason == (
        "no service handles slmops.cmd.optimize.request: its consumer optimizer-commands (slmops.cmd.optimize.>) "
        "has not been on the server for 60 s; is that service installed?"
    )


def test_the_grace_period_counts_from_when_a_subject_was_first_seen_unclaimed() -> None:
    first = unclaimed_since({}, ["slmops.cmd.a", "slmops.cmd.b"], now=100.0)
    assert first == {"slmops.cmd.a": 100.0, "slmops.cmd.b": 100.0}
    # b got a consumer (or was emptied), c is new: a keeps its time, b is forgotten.
    assert unclaimed_since(first, ["slmops.cmd.a", "slmops.cmd.c"], now=130.0) == {
        "slmops.cmd.a": 100.0,
        "slmops.cmd.c": 130.0,
    }


@pytest.mark.parametrize(
    ("headers", "inbox"),
    [
        ({"Slmops-Reply-To": "_INBOX.operator.cli.abc"}, "_INBOX.operator.cli.abc"),
        ({"Slmops-Reply-To": "slmops.cmd.model.register"}, None),  # never a reply onto a real subject
        ({"Slmops-Reply-To": "_INBOX." + "a" * 7000}, None),  # over the server's control line
        ({"Slmops-Reply-To": "_INBOX.a b c"}, None),  # spaces would split the PUB line
        ({"Slmops-Reply-To": "_INBOX.>"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_only_an_inbox_is_replied_to(headers: dict[str, str] | None, inbox: str | None) -> None:
    assert reply_inbox(headers) == inbox


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        (json.dumps({"type": "x.y", "id": "cmd-1"}).encode(), {"Nats-Msg-Id": "hdr-1"}, "cmd-1"),
        (b"not json \xff", {"Nats-Msg-Id": "hdr-1"}, "hdr-1"),
        (json.dumps({"id": 7}).encode(), {}, "stream-seq-42"),
        (b"[1, 2]", None, "stream-seq-42"),
    ],
)
def test_the_sender_is_told_the_id_it_knows_the_command_by(
    body: bytes, headers: dict[str, str] | None, expected: str
) -> None:
    assert command_id(body, headers, 42) == expected
