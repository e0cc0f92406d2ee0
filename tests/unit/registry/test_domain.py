"""The registry's rules (services/registry/domain.py): registration decisions, alias history, references."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.registry import domain
from services.registry.errors import NotFound, VersionConflict
from shared.messages.registry import AliasRecord, Artifact, ModelVersionRecord, OnnxInfo

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def record(version: str, digest: str = "a" * 64, *, command_id: str = "c1", at: datetime = T0) -> ModelVersionRecord:
    return ModelVersionRecord(
        name="tiny",
        version=version,
        artifact=Artifact(digest=digest, size_bytes=1, key=f"blobs/sha256/{digest}", signature="sig"),
        onnx=OnnxInfo(ir_version=8, opsets={"": 17}, inputs=[], outputs=[], parameters=0, op_types=[]),
        registered_at=at,
        command_id=command_id,
    )


def test_registration_decisions() -> None:
    assert domain.decide_registration(None, digest="a" * 64, command_id="c1", what="tiny 1") is domain.Decision.CREATE
    existing = record("1")
    assert (
        domain.decide_registration(existing, digest="a" * 64, command_id="c1", what="tiny 1") is domain.Decision.REPLAY
    )
    assert (
        domain.decide_registration(existing, digest="a" * 64, command_id="c2", what="tiny 1")
        is domain.Decision.UNCHANGED
    )
    with pytest.raises(VersionConflict, match="tiny 1 is already registered"):
        domain.decide_registration(existing, digest="b" * 64, command_id="c3", what="tiny 1")


def test_alias_history_and_replays() -> None:
    first, d1 = domain.apply_alias(None, name="tiny", alias="stable", version="1", at=T0, command_id="a")
    assert d1 is domain.Decision.CREATE and first.history[0].previous is None
    second, d2 = domain.apply_alias(first, name="tiny", alias="stable", version="2", at=T0, command_id="b")
    assert d2 is domain.Decision.CREATE and [c.version for c in second.history] == ["1", "2"]
    assert second.history[-1].previous == "1"
    again, d3 = domain.apply_alias(second, name="tiny", alias="stable", version="2", at=T0, command_id="b")
    assert d3 is domain.Decision.REPLAY and again == second
    same, d4 = domain.apply_alias(second, name="tiny", alias="stable", version="2", at=T0, command_id="c")
    assert d4 is domain.Decision.UNCHANGED and same == second


def test_a_ref_resolves_by_its_syntax_so_a_version_never_shadows_an_alias() -> None:
    versions = [
        record("1", at=T0),
        record("2", "b" * 64, at=T0 + timedelta(seconds=1)),
        record("stable", "c" * 64, at=T0 - timedelta(days=1)),  # a record from before the rule
    ]
    aliases = [
        AliasRecord(name="tiny", alias="stable", version="1", history=[]),
        AliasRecord(name="tiny", alias="canary", version="2", history=[]),
    ]
    assert domain.resolve_ref("latest", versions=versions, aliases=aliases).version == "2"
    assert domain.resolve_ref("canary", versions=versions, aliases=aliases).version == "2"
    assert domain.resolve_ref("stable", versions=versions, aliases=aliases).version == "1", "the alias wins"
    assert domain.resolve_ref("1", versions=versions, aliases=aliases).version == "1"
    with pytest.raises(NotFound, match="no alias 'nope'; aliases: canary, stable"):
        domain.resolve_ref("nope", versions=versions, aliases=aliases)
    with pytest.raises(NotFound, match="no version '3'; versions: 1, 2, stable"):
        domain.resolve_ref("3", versions=versions, aliases=aliases)
