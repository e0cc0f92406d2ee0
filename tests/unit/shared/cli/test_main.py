"""The root CLI: every service's commands are found by entry point, and building the CLI (what
`slmops --help` does) imports none of the heavy libraries the commands themselves use."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from shared.cli.main import build_app, missing_extra

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
        "apply",
        "diff",
        "blueprint",
    ):
        assert command in result.output


def test_a_single_command_refuses_an_option_it_does_not_know(monkeypatch: pytest.MonkeyPatch) -> None:
    """`slmops apply -f x --dry-run` must not apply: only a stand-in takes any argument."""
    ran = []

    class Entry:
        name = "apply"

        def load(self) -> object:
            return lambda: ran.append(True)

    monkeypatch.setattr("shared.cli.main.cli_entry_points", lambda: [Entry()])
    result = CliRunner().invoke(build_app(), ["apply", "--dry-run"])
    assert result.exit_code == 2 and "No such option" in result.output and ran == []


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


@pytest.mark.parametrize(
    ("module", "hint"),
    [
        ("faststream", "pip install 'slmops[services]'"),
        ("yaml", "pip install 'slmops[services]'"),
        ("moto", "pip install 'slmops[stack]'"),
        ("safetensors", "pip install 'slmops[samples]'"),
        ("onnx.helper", "pip install 'slmops[samples]' or pip install 'slmops[services]'"),
        ("certifi", "pip install 'slmops[services]'"),
        ("some_dependency_of_a_dependency", "pip install 'slmops[all]' installs every extra"),
    ],
)
def test_a_missing_module_names_the_extra_that_brings_it(module: str, hint: str) -> None:
    said = missing_extra(ModuleNotFoundError(name=module))
    assert said is not None and hint in said and said.startswith(module.split(".")[0])


def test_a_missing_module_of_our_own_is_not_blamed_on_an_extra() -> None:
    assert missing_extra(ModuleNotFoundError(name="services.registry.gone")) is None


def test_a_command_module_that_cannot_load_becomes_a_stand_in_that_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    class Missing:
        name = "model"

        def load(self) -> None:
            raise ModuleNotFoundError("No module named 'faststream'", name="faststream")

    monkeypatch.setattr("shared.cli.main.cli_entry_points", lambda: [Missing()])
    app = build_app()
    listed = CliRunner().invoke(app, ["--help"])
    assert listed.exit_code == 0 and "not available here: needs faststream" in " ".join(listed.output.split())
    ran = CliRunner().invoke(app, ["model", "push", "x.onnx"])
    assert ran.exit_code == 1 and "pip install 'slmops[services]'" in " ".join(ran.output.split())
