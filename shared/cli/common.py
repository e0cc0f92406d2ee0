"""What every command shares: running a coroutine, failing with a message, JSON output, shared options.

Importing this (and any command module) must stay cheap: `slmops --help` loads every command
module, so heavy imports (NATS, S3, onnx, the services) happen inside the commands.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from shared.errors import SlmopsError

if TYPE_CHECKING:
    from nats.aio.client import Client

    from shared.auth.authority import Authority

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)
CLI_SOURCE = "cli"

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables.")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `message` (verbatim: a pydantic reason's brackets are not markup) and exit with `code`."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def run(coro: Coroutine[Any, Any, T], *, error_code: int = 1) -> T:
    """Run a command's coroutine; the platform's errors become a one-line message and exit `error_code`
    (a command whose exit 1 means something else, like `slmops diff --exit-code`, fails with 2)."""
    import asyncio

    try:
        return asyncio.run(coro)
    except SlmopsError as exc:
        fail(f"{exc} ({exc.remote_code})" if exc.remote_code else str(exc), error_code)


@contextlib.asynccontextmanager
async def operator_connection() -> AsyncIterator[Client]:
    """A NATS connection with the operator's settings (SLMOPS_*, or the running stack's), closed on the way out."""
    from shared import bus
    from shared.settings import load_settings

    nc = await bus.connect(load_settings(), name="slmops-cli")
    try:
        yield nc
    finally:
        await nc.close()


def authority_at(directory: Path) -> Authority:
    """The deployment's keys in `directory` (device enrolment, credentials), or a clear exit."""
    from shared.auth.authority import Authority

    try:
        return Authority.existing(directory)
    except SlmopsError as exc:
        fail(str(exc))


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def parse_labels(items: list[str], *, option: str) -> dict[str, str]:
    """`key=value` strings as a dict; anything else fails naming the option."""
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{option} wants key=value, got {item!r}")
        labels[key] = value
    return labels
