"""`slmops optimize NAME VERSION --profile P [--watch]`: search for edge variants of a version.

The heavy imports (NATS, the message models) happen inside the command, so `slmops --help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from shared.cli.common import CLI_SOURCE, JsonOption, console, fail, print_json, run

if TYPE_CHECKING:
    from nats.aio.client import Client

    from shared.messages.optimizer import OptimizationCompleted, OptimizationFailed, OptimizeModel


def optimize(
    name: str = typer.Argument(..., help="Registered model name."),
    version: str = typer.Argument(..., help="Registered version (the base of every candidate)."),
    profile: str = typer.Option(..., "--profile", "-p", help="Device profile, e.g. rpi5 (see deploy/profiles/)."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Follow progress and print the candidates."),
    timeout: float = typer.Option(1800.0, help="With --watch: seconds to wait for the result."),
    as_json: bool = JsonOption,
) -> None:
    """Queue an optimization; with --watch, show its progress and the table of candidates."""
    from services.optimizer import render
    from shared.messages.optimizer import OptimizationFailed, OptimizeModel

    try:
        cmd = OptimizeModel(name=name, version=version, profile=profile)
    except ValueError as exc:
        fail(f"invalid request: {exc}")
    final = run(_optimize(cmd, watch=watch, timeout=timeout, quiet=as_json))
    if final is None:
        return
    if as_json:
        print_json(final.model_dump(mode="json"))
    else:
        console.print(render.candidates(final))
    if isinstance(final, OptimizationFailed):
        fail(final.reason)
    if as_json:
        return
    for v in final.registered:
        console.print(f"[green]registered variant {v.variant}[/] of {name} {version} (sha256 {v.digest[:16]}…)")


async def _optimize(
    cmd: OptimizeModel, *, watch: bool, timeout: float, quiet: bool
) -> OptimizationCompleted | OptimizationFailed | None:
    from shared import bus
    from shared.settings import load_settings

    nc = await bus.connect(load_settings(), name="slmops-cli")
    try:
        if not watch:
            command_id, _ = await bus.send_command(nc, cmd, source=CLI_SOURCE)
            console.print(f"optimization {command_id} queued; follow it with --watch next time")
            return None
        return await _watch(nc, cmd, timeout=timeout, quiet=quiet)
    finally:
        await nc.close()


async def _watch(
    nc: Client, cmd: OptimizeModel, *, timeout: float, quiet: bool
) -> OptimizationCompleted | OptimizationFailed:
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from services.optimizer import render
    from shared import bus, subjects
    from shared.messages.envelope import InvalidMessage, decode
    from shared.messages.optimizer import OptimizationCompleted, OptimizationFailed, OptimizationProgress

    # Subscribe before sending, so no event of this optimization can be missed.
    sub = await nc.subscribe(f"{subjects.EVT}.optimization.>")
    try:
        command_id, _ = await bus.send_command(nc, cmd, source=CLI_SOURCE)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=quiet,
        ) as bar:
            task = bar.add_task(f"optimizing {cmd.name} {cmd.version} for {cmd.profile}", total=None)
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    fail(f"no result within {timeout:.0f}s; optimization {command_id} may still be running")
                try:
                    msg = await sub.next_msg(timeout=remaining)
                except TimeoutError:
                    continue
                try:
                    event = decode(msg.data).data
                except InvalidMessage:
                    continue
                if getattr(event, "optimization_id", None) != command_id:
                    continue
                if isinstance(event, OptimizationProgress):
                    bar.update(task, total=event.total, completed=event.completed)
                    if event.stage in ("evaluated", "failed") and not quiet:
                        bar.console.print(render.progress_line(event))
                elif isinstance(event, (OptimizationCompleted, OptimizationFailed)):
                    return event
    finally:
        await sub.unsubscribe()
