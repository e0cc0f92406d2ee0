"""What every command shares: the settings, running a coroutine, and mapping errors to exit codes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from shared.artifacts import ArtifactError
from shared.bus import BusError, RemoteError
from shared.stack.servers import ServerError

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)
CLI_SOURCE = "cli"

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables.")


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; the package's errors become a one-line message and exit 1."""
    try:
        return asyncio.run(coro)
    except RemoteError as exc:
        fail(f"{exc.message} ({exc.code})")
    except (BusError, ArtifactError, ServerError) as exc:
        fail(str(exc))


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))
