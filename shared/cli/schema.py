"""`slmops schema export`: the message contracts as JSON Schema files, for other systems."""

from __future__ import annotations

from pathlib import Path

import typer

from shared.cli.common import console
from shared.schema import export_json_schemas

schema_app = typer.Typer(help="Published message contracts.", no_args_is_help=True)


@schema_app.command("export")
def export(directory: Path = typer.Argument(Path("docs/schema"), help="Where to write the .json files.")) -> None:
    """Write one JSON Schema per message type and version (envelope included)."""
    written = export_json_schemas(directory)
    console.print(f"wrote {len(written)} schemas to {directory}")
