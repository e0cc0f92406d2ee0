"""The root CLI: every service's commands are found by entry point, and building the CLI (what
`slmops --help` does) imports none of the heavy libraries the commands themselves use."""

from __future__ import annotations

import json
import subprocess
import sys

import typer
from typer.testing import CliRunner

from shared.cli.main import build_app

HEAVY = ("onnx", "onnxruntime", "numpy", "faststream", "minio", "nats", "moto", "pydantic_settings", "yaml")


def test_every_service_command_is_found() -> None:
    result = CliRunner().invoke(build_app(), ["--help"])
    assert result.exit_code == 0
    for command in (
        "up",
        "down",
        "status",
        "stack",
        "service",
        "schema",
        "model",
        "optimize",
        "agent",
        "device",
        "fleet",
    ):
        assert command in result.output


def test_building_the_cli_imports_nothing_heavy() -> None:
    """Why `slmops --help` is fast: only typer and the command modules load (run in a fresh interpreter)."""
    probe = (
        "import json, sys\n"
        "from shared.cli.main import build_app\n"
        "build_app()\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {list(HEAVY)!r})))\n"
    )
    loaded = json.loads(
        subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    )
    assert loaded == []


def test_a_service_command_group_is_a_typer_app() -> None:
    from services.registry.cli import model_app

    assert isinstance(model_app, typer.Typer)
