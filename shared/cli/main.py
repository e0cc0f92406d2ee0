"""The `slmops` entry point: the platform's own commands, plus every service's, found by entry point.

Services add their commands through the `slmops.cli` entry-point group (see `shared.discovery`),
so this module names none of them. Nothing runs at import time, and nothing heavy is imported
until a command runs: `slmops --help` reads only typer and the command modules. A command whose
module or body needs what this installation lacks (an extra not installed) says which extra to
install instead of failing with a traceback, and leaves every other command working.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib.metadata import EntryPoint, PackageNotFoundError, requires

import typer

from shared.cli import auth, schema, stack, trace
from shared.cli.common import err_console, fail
from shared.discovery import cli_entry_points

# Import names whose distribution is named otherwise.
_DISTRIBUTION_OF = {"yaml": "pyyaml"}


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
    app.command()(trace.trace)
    app.add_typer(stack.stack_app, name="stack")
    app.add_typer(stack.service_app, name="service")
    app.add_typer(schema.schema_app, name="schema")
    app.add_typer(auth.auth_app, name="auth")
    for entry in cli_entry_points():
        _add(app, entry)
    return app


def main() -> None:
    try:
        build_app()()
    except ModuleNotFoundError as exc:  # a command's body needs an extra this installation lacks
        hint = missing_extra(exc)
        if hint is None:
            raise
        err_console.print(f"[bold red]error:[/] this command needs {hint}")
        raise SystemExit(1) from None


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """'onnx, which this installation lacks: pip install ...' for a module missing from this installation.

    Returns None for a module of SLMOps itself (a broken checkout, not a missing extra).
    """
    module = (exc.name or "").split(".")[0]
    if not module or module in ("shared", "services", "samples"):
        return None
    distribution = _DISTRIBUTION_OF.get(module, module).lower().replace("_", "-")
    extras = sorted(set(_extras_requiring(distribution)) - {"all", "test"})
    if not extras:  # what one of the extras' packages needs in turn
        return f"{module}, which this installation lacks (pip install 'slmops[all]' installs every extra)"
    install = " or ".join(f"pip install 'slmops[{extra}]'" for extra in extras)
    return f"{module}, which this installation lacks: {install}"


def _extras_requiring(distribution: str) -> list[str]:
    try:
        requirements = requires("slmops") or []
    except PackageNotFoundError:
        return []
    found = []
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", requirement)
        if name and extra and name.group(0).lower().replace("_", "-") == distribution:
            found.append(extra.group(1))
    return found


def _add(app: typer.Typer, entry: EntryPoint) -> None:
    try:
        command = entry.load()
    except ModuleNotFoundError as exc:
        hint = missing_extra(exc)
        if hint is None:
            raise
        # The stand-in takes whatever arguments the real command would have, to say why it cannot run.
        stand_in = {"allow_extra_args": True, "ignore_unknown_options": True}
        app.command(entry.name, context_settings=stand_in)(_unavailable(entry.name, hint))
        return
    if isinstance(command, typer.Typer):
        app.add_typer(command, name=entry.name)
    else:
        # A real command refuses an option it does not know: `slmops apply --dry-run` must not apply.
        app.command(entry.name)(command)


def _unavailable(name: str, hint: str) -> Callable[[], None]:
    """A stand-in for a command whose module cannot load here: it says why, in help and when run."""

    def unavailable() -> None:
        fail(f"`slmops {name}` needs {hint}")

    unavailable.__doc__ = f"(not available here: needs {hint.split(',')[0]})"
    return unavailable


if __name__ == "__main__":
    main()
