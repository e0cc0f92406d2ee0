"""`slmops schema export`: the published contracts, JSON Schema per message and AsyncAPI per service."""

from __future__ import annotations

from pathlib import Path

import typer

from shared.cli.common import console, fail

schema_app = typer.Typer(help="Published message contracts.", no_args_is_help=True)


@schema_app.command("export")
def export(
    directory: Path = typer.Argument(Path("docs/schema"), help="Where to write the JSON Schema files."),
    asyncapi: Path | None = typer.Option(
        None, help="Where to write each service's AsyncAPI document (default: 'asyncapi' beside DIRECTORY)."
    ),
) -> None:
    """Write one JSON Schema per message type and version (envelope included), and every AsyncAPI document."""
    from shared.errors import SlmopsError
    from shared.schema import export_json_schemas

    written = export_json_schemas(directory)
    console.print(f"wrote {len(written)} schemas to {directory}")
    target = asyncapi or directory.parent / "asyncapi"
    try:
        from shared.kit.asyncapi import export_asyncapi
    except ModuleNotFoundError as exc:  # an agent-only install has no FastStream to describe services with
        console.print(f"AsyncAPI documents not written: they need {exc.name} (pip install 'slmops[services]')")
        return
    try:
        documents = export_asyncapi(target)
    except SlmopsError as exc:
        fail(f"cannot describe the services: {exc}")
    console.print(f"wrote {len(documents)} AsyncAPI documents to {target}")
