"""Subjects are built by rule, and values that would change a subject's shape are refused."""

from __future__ import annotations

import pytest

from shared import subjects
from shared.messages.registry import RegisterModel


def test_subject_rules() -> None:
    assert subjects.command(RegisterModel) == "slmops.cmd.model.register"
    assert subjects.rpc("registry", "list") == "slmops.rpc.registry.list"
    assert subjects.telemetry("dev-1") == "slmops.telemetry.dev-1"
    for bad in ("a.b", "*", ">", "with space", "", "dev-1\n"):
        with pytest.raises(ValueError):
            subjects.device_status(bad)
