"""`slmops fleet simulate`: a fleet of simulated devices on the real bus, and its report.

The command parses the options (bad ones fail before anything connects), runs the simulator for
`--duration` seconds (or until Ctrl-C) with a one-line live summary, then prints the `FleetReport`
as tables, or as JSON with `--json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import Counter

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from services.edge_agent.fleet import (
    DEFAULT_MIX,
    FleetConfigError,
    FleetReport,
    FleetSimulator,
    SimulationConfig,
    load_classes,
    parse_faults,
    parse_mix,
)
from shared.cli.common import JsonOption, console, fail, print_json, run
from shared.settings import load_settings

fleet_app = typer.Typer(no_args_is_help=True)


@fleet_app.callback()
def fleet() -> None:
    """Simulated device fleets on the real device protocol (a group, so `fleet simulate` stays a verb)."""


FAULTS_HELP = (
    "Injected faults, each a share (offline=5%) or a number of devices (crash=3): offline, slow, download_fail, "
    "flaky, corrupt, crash; a device gets at most one. E.g. offline=5%,slow=10%,download_fail=2%,corrupt=1%,crash=2%."
)


@fleet_app.command()
def simulate(
    devices: int = typer.Option(100, "--devices", "-n", help="Number of simulated devices."),
    mix: str = typer.Option(DEFAULT_MIX, help="Device classes and their relative weights."),
    faults: str = typer.Option("", help=FAULTS_HELP),
    real_inference: int | None = typer.Option(
        None,
        help="Devices that run real onnxruntime inference (default min(devices, 50)); the rest draw "
        "their telemetry from per-artifact measurements on this host.",
    ),
    connections: int | None = typer.Option(None, help="NATS connections (default one per 500 devices, at most 32)."),
    duration: float = typer.Option(60.0, help="Seconds to run; 0 = until Ctrl-C."),
    heartbeat: float = typer.Option(30.0, help="Seconds between a device's hellos."),
    window: float = typer.Option(30.0, help="Seconds per telemetry window."),
    rate: float = typer.Option(1.0, help="Inference requests per second per device."),
    id_prefix: str = typer.Option("sim", help="Device ids are PREFIX-<index>."),
    offline_after: float = typer.Option(5.0, help="offline fault: seconds after start before dropping off."),
    offline_for: float = typer.Option(20.0, help="offline fault: seconds away."),
    share_download_urls: bool = typer.Option(
        True, help="Devices on one connection reuse a presigned URL per digest (half its TTL)."
    ),
    seed: int = typer.Option(0, help="Seed for class/fault assignment and every random draw."),
    as_json: bool = JsonOption,
) -> None:
    """Run N simulated devices that follow their desired state, install, report and send telemetry."""
    try:
        config = SimulationConfig(
            devices=devices,
            mix=parse_mix(mix, load_classes()),
            faults=parse_faults(faults),
            connections=connections,
            real_inference=real_inference,
            id_prefix=id_prefix,
            heartbeat_seconds=heartbeat,
            window_seconds=window,
            request_rate=rate,
            offline_after=offline_after,
            offline_for=offline_for,
            share_download_urls=share_download_urls,
            seed=seed,
        )
    except FleetConfigError as exc:
        fail(str(exc), code=2)
    if duration < 0:
        fail("--duration cannot be negative", code=2)
    report = run(_simulate(config, duration=duration, quiet=as_json))
    if as_json:
        print_json(report.model_dump(mode="json"))
        return
    console.print(report_tables(report))


async def _simulate(config: SimulationConfig, *, duration: float, quiet: bool) -> FleetReport:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with FleetSimulator(load_settings(), config) as sim:
        deadline = loop.time() + duration if duration else None
        live = Live(console=console, transient=True, refresh_per_second=2)
        with live if not quiet else contextlib.nullcontext():
            while not stop.is_set() and (deadline is None or loop.time() < deadline):
                live.update(progress_line(sim))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
        return sim.report()


def progress_line(sim: FleetSimulator) -> Text:
    states = Counter(sim.state_of(d) for d in sim.devices)
    parts = ", ".join(f"{name} {count}" for name, count in sorted(states.items()))
    return Text(f"{len(sim.devices)} devices: {parts}")


def report_tables(report: FleetReport) -> Group:
    """The report as three tables: per class, install steps, and resources/shared work."""
    classes = Table(title=f"fleet: {report.devices} devices on {report.connections} connections")
    states = sorted({s for c in report.classes for s in c.states})
    for col in ("class", "devices", "speed", *states, "converged", "p50 s", "p95 s", "max s"):
        classes.add_column(col, justify="left" if col == "class" else "right")
    for c in report.classes:
        conv = c.convergence
        classes.add_row(
            c.device_class,
            str(c.devices),
            f"{c.speed_factor:g}x",
            *(str(c.states.get(s, 0)) for s in states),
            str(conv.devices),
            _seconds(conv.p50_s),
            _seconds(conv.p95_s),
            _seconds(conv.max_s),
        )
    steps = Table(title="statuses acknowledged, by step")
    for step in report.steps:
        steps.add_column(step, justify="right")
    steps.add_row(*(str(v) for v in report.steps.values()))
    r, s = report.resources, report.shared
    facts = Table(title="run", show_header=False)
    facts.add_column("what", style="bold")
    facts.add_column("value")
    rows = [
        ("elapsed", f"{report.elapsed_s:.1f} s (all connected after {_seconds(report.connected_s)} s)"),
        (
            "convergence (all)",
            f"p50 {_seconds(report.convergence.p50_s)} s, p95 {_seconds(report.convergence.p95_s)} s",
        ),
        (
            "messages",
            ", ".join(f"{k} {v}" for k, v in report.messages.items()) + f" ({report.messages_per_second:.0f}/s)",
        ),
        ("faults", ", ".join(f"{k} {v}" for k, v in report.faults.items()) or "none"),
        ("fault events", ", ".join(f"{k} {v}" for k, v in sorted(report.events.items())) or "none"),
        (
            "cpu",
            f"{r.cpu_seconds:.1f} s + worker {r.worker_cpu_seconds:.1f} s"
            f" = {r.cpu_seconds_per_device * 1000:.2f} ms/device",
        ),
        (
            "memory",
            f"RSS {r.rss_baseline_mb:.0f} → peak {r.rss_peak_mb:.0f} MiB = {r.rss_per_device_kb:.1f} KiB/device;"
            f" worker {r.worker_rss_mb:.0f} MiB",
        ),
        (
            "shared work",
            f"{s.real_downloads} real downloads ({s.real_download_bytes:,} B), {s.download_url_requests} URL "
            f"requests (shared per connection: {'yes' if s.download_urls_shared else 'no'}),"
            f" {s.measurements} artifacts measured, {s.real_inference_devices} real-inference devices"
            f" ({s.real_inference_requests} requests)",
        ),
    ]
    for what, value in rows:
        facts.add_row(what, value)
    return Group(classes, steps, facts)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
