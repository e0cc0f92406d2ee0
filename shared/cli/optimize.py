"""`slmops optimize NAME VERSION --profile P [--watch]`: search for edge variants of a version."""

from __future__ import annotations

import asyncio
import json

import typer
from nats.aio.client import Client
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shared import bus, subjects
from shared.cli import render
from shared.cli.common import CLI_SOURCE, JsonOption, console, fail, print_json, run
from shared.messages.envelope import InvalidMessage, decode
from shared.messages.optimizer import OptimizationCompleted, OptimizationFailed, OptimizationProgress, OptimizeModel
from shared.settings import load_settings


def optimize(
    name: str = typer.Argument(..., help="Registered model name."),
    version: str = typer.Argument(..., help="Registered version (the base of every candidate)."),
    profile: str = typer.Option(..., "--profile", "-p", help="Device profile, e.g. rpi5 (see deploy/profiles/)."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Follow progress and print the candidates."),
    timeout: float = typer.Option(1800.0, help="With --watch: seconds to wait for the result."),
    as_json: bool = JsonOption,
) -> None:
    """Queue an optimization; with --watch, show its progress and the table of candidates."""
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
                        bar.console.print(_progress_line(event))
                elif isinstance(event, (OptimizationCompleted, OptimizationFailed)):
                    return event
    finally:
        await sub.unsubscribe()


def _progress_line(event: OptimizationProgress) -> str:
    if event.stage == "failed":
        return f"  [red]✗[/] {event.candidate}: {event.error}"
    m = event.metrics
    if m is None:
        return f"  {event.candidate}: evaluated"
    mark = "[green]✓[/]" if m.meets_budget else "[yellow]·[/]"
    return f"  {mark} {event.candidate}: {m.size_bytes / 1e6:.1f} MB, p50 {m.latency_p50_ms:.2f} ms, " + json.dumps(
        {k: round(v, 4) for k, v in m.fidelity.items()}
    )
