"""The `slmops` entry point: the platform's own commands, plus every service's, found by entry point.

Services add their commands through the `slmops.cli` entry-point group (see `shared.discovery`),
so this module names none of them. Nothing runs at import time, and nothing heavy is imported
until a command runs: `slmops --help` reads only typer and the command modules.
"""

from __future__ import annotations

import typer

from shared.cli import schema, stack
from shared.cli.common import err_console
from shared.discovery import cli_entry_points

# Modules only some extras install, and the extra that brings each.
_EXTRA_OF = {
    "faststream": "services",
    "minio": "services",
    "onnx": "services",
    "yaml": "services",
    "zstandard": "services",
    "onnxruntime": "agent",
    "numpy": "agent",
    "cryptography": "agent",
    "moto": "stack",
    "safetensors": "samples",
    "tokenizers": "samples",
}


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="slmops",
        help="SLMOps: optimize, register and roll out small language models to edge fleets.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    app.command()(stack.up)
    app.command()(stack.down)
    app.command()(stack.status)
    app.add_typer(stack.stack_app, name="stack")
    app.add_typer(stack.service_app, name="service")
    app.add_typer(schema.schema_app, name="schema")
    for entry in cli_entry_points():
        command = entry.load()
        if isinstance(command, typer.Typer):
            app.add_typer(command, name=entry.name)
        else:
            app.command(entry.name)(command)
    return app


def main() -> None:
    try:
        build_app()()
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        extra = _EXTRA_OF.get(missing)
        if extra is None:
            raise
        err_console.print(
            f"[bold red]error:[/] this command needs {missing}, which this installation lacks: "
            f"pip install 'slmops[{extra}]'"
        )
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
