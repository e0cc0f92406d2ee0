"""`slmops telemetry top|show`: the fleet's telemetry per cohort, from the telemetry service.

Both call `shared.clients.TelemetryClient.summarize` and render what it returns; `top` redraws a
live table (rich) until interrupted.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import typer

from shared.cli.common import CLI_SOURCE, JsonOption, console, fail, print_json, run

if TYPE_CHECKING:
    from rich.table import Table

    from shared.messages.telemetry import TelemetrySummary

telemetry_app = typer.Typer(help="The fleet's telemetry, per cohort (digest x class x rollout x wave).")


@telemetry_app.command("show")
def show(
    digest: str = typer.Argument(..., help="A model artifact's sha256 digest (64 hex characters)."),
    seconds: float = typer.Option(300.0, "--seconds", "-s", help="How far back, in seconds."),
    as_json: bool = JsonOption,
) -> None:
    """Every cohort running DIGEST over the last SECONDS: requests, errors, latency quantiles, outputs."""
    import re

    from shared.messages.common import SHA256_HEX

    if not re.fullmatch(SHA256_HEX.strip("^$"), digest):
        fail(f"{digest!r} is not a sha256 digest (64 lowercase hex characters)")
    summary = run(_summary(digest, seconds))
    if as_json:
        print_json(summary.model_dump(mode="json"))
        return
    if not summary.cohorts:
        console.print(f"no telemetry for {digest[:12]}… in the last {seconds:g} s")
        return
    console.print(_table(summary, title=f"{digest[:12]}…, last {seconds:g} s"))


@telemetry_app.command("top")
def top(
    seconds: float = typer.Option(60.0, "--seconds", "-s", help="Each row covers this many seconds back."),
    every: float = typer.Option(2.0, "--every", help="Seconds between refreshes."),
    once: bool = typer.Option(False, "--once", help="Print one table and exit."),
) -> None:
    """A live table of every cohort, busiest first (Ctrl-C to stop)."""
    if once:
        console.print(_table(run(_summary(None, seconds)), title=f"last {seconds:g} s"))
        return
    try:
        run(_live(seconds, every))
    except KeyboardInterrupt:
        pass


async def _summary(digest: str | None, seconds: float) -> TelemetrySummary:
    from shared import bus
    from shared.clients.telemetry import TelemetryClient
    from shared.settings import load_settings

    nc = await bus.connect(load_settings(), name="slmops-cli")
    try:
        return await TelemetryClient(nc, source=CLI_SOURCE).summarize(model_digest=digest, seconds=seconds)
    finally:
        await nc.close()


async def _live(seconds: float, every: float) -> None:
    from rich.live import Live

    from shared import bus
    from shared.clients.telemetry import TelemetryClient
    from shared.settings import load_settings

    nc = await bus.connect(load_settings(), name="slmops-cli")
    client = TelemetryClient(nc, source=CLI_SOURCE)
    try:
        with Live(console=console, auto_refresh=False) as live:
            while True:
                live.update(_table(await client.summarize(seconds=seconds), title=f"last {seconds:g} s"), refresh=True)
                await asyncio.sleep(every)
    finally:
        await nc.close()


def _table(summary: TelemetrySummary, *, title: str) -> Table:
    from rich.table import Table

    table = Table(title=f"telemetry: {title} (fold position {summary.position})")
    for column in ("digest", "class", "rollout/wave", "devices", "windows", "requests", "errors", "p50 ms", "p95 ms"):
        table.add_column(column, justify="left" if column in ("digest", "class", "rollout/wave") else "right")
    table.add_column("p99 ms", justify="right")
    for s in summary.cohorts:
        c = s.cohort
        table.add_row(
            c.model_digest[:12],
            c.device_class,
            f"{c.rollout_id}/{c.wave}" if c.rollout_id else "by hand",
            str(s.devices),
            str(s.windows),
            str(s.requests),
            f"{s.error_rate:.2%}" if s.error_rate is not None else "-",
            *(f"{v:.2f}" if v is not None else "-" for v in (s.latency_p50_ms, s.latency_p95_ms, s.latency_p99_ms)),
        )
    if summary.omitted:
        table.caption = f"{summary.omitted} quieter cohorts not shown"
    return table
