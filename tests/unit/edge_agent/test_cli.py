"""`slmops fleet simulate` refuses bad options before it connects to anything."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from services.edge_agent.cli import fleet_app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mix", "rpi5=60,toaster=40"], "unknown device class 'toaster'"),
        (["--faults", "offline=5%,gremlins=1%"], "unknown fault 'gremlins'"),
        (["--faults", "offline=80%,crash=30%"], "add up to 110%"),
        (["--devices", "0"], "--devices must be at least 1"),
        (["--devices", "10", "--connections", "11"], "--connections must be between 1 and --devices"),
        (["--duration", "-1"], "--duration cannot be negative"),
    ],
)
def test_bad_options_exit_2_with_the_reason(args: list[str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMOPS_NATS_URL", "nats://127.0.0.1:1")  # nothing listens: it must fail before connecting
    result = CliRunner().invoke(fleet_app, ["simulate", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
