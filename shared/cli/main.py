"""The `slmops` entry point: assembles the command groups; nothing runs at import time."""

from __future__ import annotations

import typer

from shared.cli import stack
from shared.cli.agent import agent
from shared.cli.device import device_app
from shared.cli.fleet import fleet_app
from shared.cli.model import model_app
from shared.cli.optimize import optimize
from shared.cli.schema import schema_app

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
app.add_typer(model_app, name="model")
app.command()(optimize)
app.command()(agent)
app.add_typer(device_app, name="device")
app.add_typer(fleet_app, name="fleet")
app.add_typer(schema_app, name="schema")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
