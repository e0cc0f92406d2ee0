"""Rich renderings of optimizer results, kept apart from the commands that fetch them."""

from __future__ import annotations

import json

from rich.table import Table

from shared.messages.optimizer import OptimizationCompleted, OptimizationFailed, OptimizationProgress


def candidates(final: OptimizationCompleted | OptimizationFailed) -> Table:
    """Every candidate of a search with its metrics; the registered one marked."""
    chosen = {v.recipe for v in final.registered} if isinstance(final, OptimizationCompleted) else set()
    profile = final.profile
    speed = profile.speed_factor if profile else 1.0
    table = Table(
        title=f"{final.name} {final.version} for {profile.name if profile else '?'} (device = host × {speed:g})"
    )
    fidelity_cols = [
        k
        for k in ("cosine_mean", "cosine_min", "top1_agreement", "kl", "task_metric")
        if any(c.metrics and k in c.metrics.fidelity for c in final.candidates)
    ]
    for col in ("recipe", "MB", "zstd MB", "p50 ms", "p95 ms (device)", *fidelity_cols, "meets budget"):
        table.add_column(col)
    for c in final.candidates:
        name = f"[bold green]{c.recipe.name} ★[/]" if c.recipe.name in chosen else c.recipe.name
        if c.metrics is None:
            table.add_row(name, *[""] * (4 + len(fidelity_cols)), "[red]error[/]")
            continue
        m = c.metrics
        missed = ", ".join(f.split(":")[0] for f in m.failures)
        table.add_row(
            name,
            f"{m.size_bytes / 1e6:.2f}",
            f"{m.compressed_size_bytes / 1e6:.2f}",
            f"{m.latency_p50_ms:.2f}",
            f"{m.latency_p95_ms:.2f} ({m.latency_p95_ms * speed:.1f})",
            *[_num(m.fidelity.get(k)) for k in fidelity_cols],
            "[green]yes[/]" if m.meets_budget else f"[red]no: {missed}[/]",
        )
    table.caption = "★ registered. Each miss and error in full: --json"
    return table


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def progress_line(event: OptimizationProgress) -> str:
    if event.stage == "failed":
        return f"  [red]✗[/] {event.candidate}: {event.error}"
    m = event.metrics
    if m is None:
        return f"  {event.candidate}: evaluated"
    mark = "[green]✓[/]" if m.meets_budget else "[yellow]·[/]"
    return f"  {mark} {event.candidate}: {m.size_bytes / 1e6:.1f} MB, p50 {m.latency_p50_ms:.2f} ms, " + json.dumps(
        {k: round(v, 4) for k, v in m.fidelity.items()}
    )
