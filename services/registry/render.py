"""Rich renderings of registry data, kept apart from the commands that fetch them."""

from __future__ import annotations

from rich.table import Table

from shared.messages.registry import AliasRecord, EvalOutputs, ModelDetail, ModelSummary


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
        ("eval outputs", eval_outputs(v.eval_outputs)),
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


def eval_outputs(recorded: EvalOutputs | None) -> str:
    """`norm 1.000 ± 0.000, value 0.004 ± 0.125 (output embedding, 32 rows)`: the drift reference."""
    if recorded is None:
        return "none"
    stats = ", ".join(f"{name} {m.mean:.4g} ± {m.variance**0.5:.3g}" for name, m in recorded.outputs.items())
    return f"{stats} (output {recorded.output}, {recorded.rows} rows)"


def alias_history(aliases: list[AliasRecord]) -> Table:
    table = Table(title="aliases")
    for col in ("alias", "version", "history"):
        table.add_column(col)
    for a in aliases:
        history = " → ".join(c.version for c in a.history)
        table.add_row(a.alias, a.version, history)
    return table
