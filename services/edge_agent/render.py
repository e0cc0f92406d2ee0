"""Rich renderings of the fleet simulator's report and live state, apart from the commands."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table
from rich.text import Text

from services.edge_agent.fleet.report import FleetReport

if TYPE_CHECKING:  # the simulator loads onnxruntime; rendering needs only its shape
    from services.edge_agent.fleet.simulator import FleetSimulator


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
