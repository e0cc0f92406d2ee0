"""Rich renderings of registry and stack data, kept apart from the commands that fetch them."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from shared.messages.optimizer import OptimizationCompleted, OptimizationFailed
from shared.messages.registry import AliasRecord, ModelDetail, ModelSummary


def model_list(models: list[ModelSummary]) -> Table:
    table = Table(title="models")
    for col in ("name", "versions", "latest", "aliases"):
        table.add_column(col)
    for m in models:
        aliases = ", ".join(f"{a}→{v}" for a, v in sorted(m.aliases.items()))
        table.add_row(m.name, ", ".join(m.versions), m.latest or "", aliases)
    return table


def model_detail(detail: ModelDetail) -> Table:
    v = detail.version
    table = Table(title=f"{v.name} {v.version}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows: list[tuple[str, str]] = [
        ("sha256", v.artifact.digest),
        ("size", f"{v.artifact.size_bytes:,} bytes"),
        ("parameters", f"{v.onnx.parameters:,}"),
        ("opsets", ", ".join(f"{d or 'ai.onnx'}:{o}" for d, o in v.onnx.opsets.items())),
        ("ir version", str(v.onnx.ir_version)),
        ("inputs", "; ".join(f"{t.name} {t.dtype}{t.shape}" for t in v.onnx.inputs)),
        ("outputs", "; ".join(f"{t.name} {t.dtype}{t.shape}" for t in v.onnx.outputs)),
        ("eval set", f"{v.eval_set.samples} samples, sha256 {v.eval_set.digest[:16]}…" if v.eval_set else "none"),
        ("labels", ", ".join(f"{k}={val}" for k, val in sorted(v.labels.items())) or "none"),
        ("aliases", ", ".join(detail.aliases) or "none"),
        ("registered", v.registered_at.isoformat()),
        ("signature", v.artifact.signature[:24] + "…"),
    ]
    for variant in detail.variants:
        req = variant.requirements
        needs = ", ".join(
            p
            for p in (
                f"ort>={req.min_onnxruntime}" if req.min_onnxruntime else "",
                f"opset {req.opset}" if req.opset else "",
                f"ram>={req.min_ram_mb}MB" if req.min_ram_mb else "",
                "+".join(req.contrib_ops),
            )
            if p
        )
        rows.append((f"variant {variant.variant}", f"{variant.artifact.size_bytes:,} bytes; {needs}"))
    for k, val in rows:
        table.add_row(k, val)
    return table


def alias_history(aliases: list[AliasRecord]) -> Table:
    table = Table(title="aliases")
    for col in ("alias", "version", "history"):
        table.add_column(col)
    for a in aliases:
        history = " → ".join(c.version for c in a.history)
        table.add_row(a.alias, a.version, history)
    return table


def stack_status(status: dict[str, Any]) -> Table:
    table = Table(title=f"slmops stack ({status.get('home', '')})")
    for col in ("component", "pid", "address", "healthy"):
        table.add_column(col)
    for row in status["components"]:
        mark = "[green]yes[/]" if row["healthy"] else "[red]no[/]"
        table.add_row(row["name"], str(row.get("pid") or ""), row.get("address", ""), mark)
    return table


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
