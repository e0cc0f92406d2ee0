"""`slmops doctor`: do the registry's records and their blobs still agree? (`shared.integrity`)"""

from __future__ import annotations

from pathlib import Path

import typer

from shared.cli.common import JsonOption, console, fail, print_json, run


def doctor(
    restore: list[Path] = typer.Option(
        None, "--restore", exists=True, dir_okay=False, help="Put FILE's bytes back where a record needs them."
    ),
    forget: list[str] = typer.Option(None, "--forget", help="Delete this record (its key, as doctor prints it)."),
    quick: bool = typer.Option(False, "--quick", help="Check that blobs exist, without hashing them."),
    as_json: bool = JsonOption,
) -> None:
    """Check every model, variant and alias record against the artifact store; exit 1 if any is broken.

    Each finding comes with the commands that repair it: restore the blob from a file that still
    has the bytes, or forget the record when the bytes are gone for good.
    """
    from shared import integrity
    from shared.settings import load_settings

    settings = load_settings()
    for path in restore or []:
        try:
            repaired = run(integrity.restore(settings, path))
        except LookupError as exc:
            fail(str(exc))
        console.print(f"restored {path.name}: {', '.join(repaired)}")
    for key in forget or []:
        try:
            run(integrity.forget(settings, key))
        except (LookupError, ValueError) as exc:
            fail(str(exc))
        console.print(f"forgot {key}")
    if restore or forget:
        return
    checked, findings = run(integrity.scan(settings, quick=quick))
    if as_json:
        print_json(
            {
                "checked": checked,
                "findings": [{"record": f.record, "problem": f.problem, "repairs": f.repairs()} for f in findings],
            }
        )
    else:
        for f in findings:
            console.print(f"[bold red]{f.record}[/]: {f.problem}", soft_wrap=True)
            for repair in f.repairs():
                console.print(f"    repair: {repair}", soft_wrap=True)
        verdict = "[green]all records intact[/]" if not findings else f"[red]{len(findings)} broken[/]"
        console.print(f"{checked} records checked: {verdict}")
    if findings:
        raise typer.Exit(1)
