"""`slmops schema export`: the published contracts, JSON Schema per message and AsyncAPI per service."""

from __future__ import annotations

from pathlib import Path

import typer

from shared.cli.common import console

schema_app = typer.Typer(help="Published message contracts.", no_args_is_help=True)


@schema_app.command("export")
def export(
    directory: Path = typer.Argument(Path("docs/schema"), help="Where to write the JSON Schema files."),
    asyncapi: Path = typer.Option(Path("docs/asyncapi"), help="Where to write each service's AsyncAPI document."),
) -> None:
    """Write one JSON Schema per message type and version (envelope included), and every AsyncAPI document."""
    from shared.kit.asyncapi import export_asyncapi
    from shared.schema import export_json_schemas

    written = export_json_schemas(directory)
    console.print(f"wrote {len(written)} schemas to {directory}")
    documents = export_asyncapi(asyncapi)
    console.print(f"wrote {len(documents)} AsyncAPI documents to {asyncapi}")
