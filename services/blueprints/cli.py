"""`slmops apply -f FILE`, `slmops diff -f FILE` and `slmops blueprint list|show|wait|delete`.

Each is a request to the blueprints service (`shared.clients.blueprints`), which checks what only
the platform can tell (the catalogue, the inventory, priority ties) and stores all or nothing. What
a file alone can tell is checked here first, with the file, document and field of every problem,
so a bad file fails before anything connects: the YAML, the resource's own rules, and one name per
blueprint across every `-f`.

`slmops diff` exits 0 whether or not something would change, so a script can print it without
treating a difference as a failure. `--exit-code` makes it answer the question instead, as
`git diff --exit-code` and `kubectl diff` do: 0 nothing would change, 1 something would, 2 it could
not tell (a bad file, a refusal, no service).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from shared.cli.common import CLI_SOURCE, JsonOption, console, fail, operator_connection, print_json, run

if TYPE_CHECKING:
    from shared.messages.blueprint import Blueprint
    from shared.messages.blueprint_api import AppliedBlueprint, ApplyResult, BlueprintDetail, BlueprintSummary

STDIN = "-"
STDIN_SOURCE = "<stdin>"
MAX_SOURCE_CHARS = 256  # ApplyBlueprints.source

FilesOption = typer.Option(
    ...,
    "--filename",
    "-f",
    help="A blueprint file, one or more YAML documents; '-' reads standard input (repeatable).",
)

blueprint_app = typer.Typer(help="Stored blueprints: the fleet's intended state.", no_args_is_help=True)


def apply(files: list[str] = FilesOption, as_json: bool = JsonOption) -> None:
    """Store the blueprints in FILE(s), all or none, and print what changes (like kubectl apply)."""
    blueprints, label = read_blueprints(files, doing="applied")
    result = run(_apply(blueprints, dry_run=False, source_file=label))
    _print_result(result, as_json=as_json)


def diff(
    files: list[str] = FilesOption,
    exit_code: bool = typer.Option(
        False, "--exit-code", help="Exit 1 if something would change, 0 if nothing would, 2 on an error."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Show what applying FILE(s) would change, per device group and why; changes nothing.

    Exits 0 whether or not something would change, unless --exit-code is given.
    """
    from services.blueprints.render import would_change

    error_code = 2 if exit_code else 1
    blueprints, label = read_blueprints(files, doing="compared", error_code=error_code)
    result = run(_apply(blueprints, dry_run=True, source_file=label), error_code=error_code)
    _print_result(result, as_json=as_json)
    if exit_code and would_change(result):
        raise typer.Exit(1)


@blueprint_app.command("list")
def list_blueprints(as_json: bool = JsonOption) -> None:
    """Every stored blueprint: its model and track, priority, generation, devices owned and lost."""
    from services.blueprints.render import blueprints_table

    summaries = run(_list())
    if as_json:
        print_json([s.model_dump(mode="json") for s in summaries])
    else:
        console.print(blueprints_table(summaries))


@blueprint_app.command("show")
def show(name: str = typer.Argument(..., help="The blueprint's metadata.name."), as_json: bool = JsonOption) -> None:
    """One blueprint: its document, devices owned and lost, its groups and what the controller did."""
    from services.blueprints.render import blueprint_view

    detail = run(_get(_checked_name(name)))
    if as_json:
        print_json(detail.model_dump(mode="json"))
        return
    for part in blueprint_view(detail):
        console.print(part)


@blueprint_app.command("wait")
def wait(
    name: str = typer.Argument(..., help="The blueprint's metadata.name."),
    version: str = typer.Option(..., "--version", "-v", help="The version that should reach its devices."),
    timeout: float = typer.Option(900.0, help="Seconds to wait at most."),
    as_json: bool = JsonOption,
) -> None:
    """Wait until VERSION reached every device of the blueprint (and was promoted, if it promotes):
    exit 0; 1 if its rollout was rolled back, aborted or refused, or the time ran out. For CI jobs."""
    outcome, reason = run(_wait(_checked_name(name), version, timeout, progress=not as_json))
    if as_json:
        print_json({"blueprint": name, "version": version, "outcome": outcome, "reason": reason})
    elif outcome == "delivered":
        console.print(f"[green]{version} delivered[/] by blueprint {name}: {reason}", highlight=False)
    if outcome != "delivered":
        fail(f"{version} not delivered by blueprint {name} ({outcome}): {reason}")


@blueprint_app.command("delete")
def delete(name: str = typer.Argument(..., help="The blueprint's metadata.name."), as_json: bool = JsonOption) -> None:
    """Forget a blueprint: its devices keep what they run, its rollouts run on."""
    from services.blueprints.render import applied_line

    applied = run(_delete(_checked_name(name)))
    if as_json:
        print_json(applied.model_dump(mode="json"))
    else:
        console.print(applied_line(applied, dry_run=False), markup=False, highlight=False)


def read_blueprints(files: Sequence[str], *, doing: str, error_code: int = 1) -> tuple[list[Blueprint], str]:
    """Every blueprint in `files` (`-` = standard input), checked without the platform's catalogue,
    and how to name the files in the service's messages; or exit with every problem, one per line.

    Args:
        files: the `-f` values, in order.
        doing: what did not happen, for the message (`nothing was applied`).
        error_code: the exit code on a problem.
    """
    from services.blueprints.errors import InvalidBlueprint
    from services.blueprints.load import load_blueprints
    from shared.messages.blueprint_api import MAX_APPLIED

    problems: list[str] = []
    texts = _read_files(files, problems)
    blueprints: list[Blueprint] = []
    first_seen: dict[str, str] = {}
    for source, text in texts:
        try:
            found = load_blueprints(text, source=source)
        except InvalidBlueprint as exc:
            problems += [p.describe(exc.source) for p in exc.problems]
            continue
        for blueprint in found:
            if blueprint.name in first_seen:
                problems.append(
                    f"{source}: blueprint {blueprint.name!r} is also in {first_seen[blueprint.name]}; "
                    "a name is one blueprint, so one would replace the other"
                )
                continue
            first_seen[blueprint.name] = source
            blueprints.append(blueprint)
    if not problems and len(blueprints) > MAX_APPLIED:
        problems.append(f"{len(blueprints)} blueprints; one apply takes at most {MAX_APPLIED}")
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        fail(f"{len(problems)} {noun}, nothing was {doing}:\n  " + "\n  ".join(problems), error_code)
    return blueprints, source_label([source for source, _ in texts])


def source_label(sources: Sequence[str]) -> str:
    """The files as the request names them: all of them, or the first and how many more if too long."""
    label = ", ".join(sources)
    if len(label) <= MAX_SOURCE_CHARS:
        return label
    more = f" and {len(sources) - 1} more files"
    return sources[0][: MAX_SOURCE_CHARS - len(more)] + more


def _read_files(files: Sequence[str], problems: list[str]) -> list[tuple[str, str]]:
    """(source, text) of every file that could be read; a problem for each that could not."""
    texts: list[tuple[str, str]] = []
    given: set[str] = set()
    for file in files:
        key = file if file == STDIN else str(Path(file).resolve())
        if key in given:
            problems.append(f"{file}: given twice" + (" (standard input can be read once)" if file == STDIN else ""))
            continue
        given.add(key)
        if file == STDIN:
            texts.append((STDIN_SOURCE, sys.stdin.read()))
            continue
        try:
            texts.append((file, Path(file).read_text(encoding="utf-8")))
        except IsADirectoryError:
            problems.append(f"{file}: a directory; give its files (-f a.yaml -f b.yaml)")
        except OSError as exc:
            problems.append(f"{file}: cannot read it: {exc.strerror or exc}")
        except UnicodeDecodeError:
            problems.append(f"{file}: not UTF-8 text")
    return texts


def _checked_name(name: str) -> str:
    """`name` if it can be a blueprint's name; else exit before connecting."""
    import re

    from shared.messages.common import NAME_PATTERN

    if not re.fullmatch(NAME_PATTERN, name):
        fail(f"{name!r} is not a blueprint name: up to 63 lowercase letters, digits, '_' and '-'")
    return name


def _print_result(result: ApplyResult, *, as_json: bool) -> None:
    from services.blueprints.render import apply_view

    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    for part in apply_view(result):
        console.print(part)


async def _apply(blueprints: list[Blueprint], *, dry_run: bool, source_file: str) -> ApplyResult:
    from shared.clients.blueprints import BlueprintsClient

    async with operator_connection() as nc:
        return await BlueprintsClient(nc, source=CLI_SOURCE).apply(blueprints, dry_run=dry_run, source_file=source_file)


async def _list() -> list[BlueprintSummary]:
    from shared.clients.blueprints import BlueprintsClient

    async with operator_connection() as nc:
        return await BlueprintsClient(nc, source=CLI_SOURCE).list()


async def _get(name: str) -> BlueprintDetail:
    from shared.clients.blueprints import BlueprintsClient

    async with operator_connection() as nc:
        return await BlueprintsClient(nc, source=CLI_SOURCE).get(name)


async def _wait(name: str, version: str, timeout: float, *, progress: bool) -> tuple[str, str]:
    """Poll the blueprint's status once a second until the delivery is decided or `timeout` passes;
    with `progress`, print the controller's summary each time it changes."""
    import asyncio
    import time

    from services.blueprints.delivery import delivery
    from shared.clients.blueprints import BlueprintsClient

    deadline = time.monotonic() + timeout
    async with operator_connection() as nc:
        client = BlueprintsClient(nc, source=CLI_SOURCE)
        said = ""
        while True:
            detail = await client.get(name, groups=False)  # its status is enough, not a diff of the fleet
            outcome, reason = delivery(detail, version)
            if progress and reason != said and outcome == "pending":
                console.print(f"  {time.strftime('%H:%M:%S')} {reason}", highlight=False, markup=False)
                said = reason
            if outcome != "pending":
                return outcome, reason
            if time.monotonic() >= deadline:
                return "timed out", f"after {timeout:.0f} s: {reason}"
            await asyncio.sleep(1.0)


async def _delete(name: str) -> AppliedBlueprint:
    from shared.clients.blueprints import BlueprintsClient

    async with operator_connection() as nc:
        return await BlueprintsClient(nc, source=CLI_SOURCE).delete(name)
