"""`make bench-optimize`: all-MiniLM-L6-v2 through every recipe, measured in one run on this host.

Prints a table (size ratio, p50/p95 latency, speed-up against FP32 measured in the same run,
mean/min cosine) and each device profile's choice, checks issue 3's targets, and writes
bench/results/optimize.json. Latency ratios, not absolute times, are the claim: the FP32 baseline is
measured before and after the candidates and the mean of the two is used, so a machine that got
busier half-way shows up as drift instead of a fake speed-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from samples.minilm import write_minilm  # noqa: E402
from services.optimizer import domain  # noqa: E402
from services.optimizer.errors import OptimizerError  # noqa: E402
from services.optimizer.evaluation import Measurement, evaluate, reference_outputs  # noqa: E402
from services.optimizer.passes.base import PassContext  # noqa: E402
from services.optimizer.profiles import DEFAULT_DIR, load_profiles, load_recipes  # noqa: E402
from services.optimizer.recipes import run_recipe  # noqa: E402
from shared.messages.optimizer import Candidate  # noqa: E402

TARGETS = {
    "int8_size_ratio_max": 0.26,
    "int8_speedup_p50_min": 1.6,
    "int8_cosine_mean_min": 0.99,
    "int8_cosine_min_min": 0.98,
    "mixed_size_ratio_max": 0.19,
    "mixed_cosine_mean_min": 0.985,
}
INT8_PROFILE = "rpi5"
MIXED_RECIPE = "mixed-int4-gather-key"
NAIVE_RECIPE = "int8-naive"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for latency (default 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "optimize.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="slmops-bench-") as tmp:
        work = Path(tmp)
        model, eval_path = write_minilm(work)
        with np.load(eval_path) as npz:
            eval_set = {k: npz[k] for k in npz.files}
        reference = reference_outputs(model, eval_set)
        recipes = load_recipes(DEFAULT_DIR)
        profiles = load_profiles(DEFAULT_DIR)

        print(f"all-MiniLM-L6-v2: {model.stat().st_size:,} bytes, {len(eval_set['input_ids'])} evaluation sentences")
        fp32_before = evaluate(model, reference=reference, eval_set=eval_set, threads=args.threads)
        measured: dict[str, Measurement | str] = {}
        seconds: dict[str, float] = {}
        for name, recipe in recipes.items():
            out = work / name / "model.onnx"
            out.parent.mkdir(parents=True)
            started = time.perf_counter()
            try:
                built = run_recipe(recipe, model, out, context=PassContext(eval_set=eval_set, workdir=out.parent))
                measured[name] = evaluate(built.path, reference=reference, eval_set=eval_set, threads=args.threads)
            except OptimizerError as exc:
                measured[name] = f"error: {exc}"
            seconds[name] = time.perf_counter() - started
            print(f"  {name}: done in {seconds[name]:.1f}s", flush=True)
        fp32_after = evaluate(model, reference=reference, eval_set=eval_set, threads=args.threads)

    base_p50 = (fp32_before.latency_p50_ms + fp32_after.latency_p50_ms) / 2
    base_size = fp32_before.size_bytes
    choices = {}
    for pname, profile in profiles.items():
        cands = [
            Candidate(recipe=r, metrics=domain.to_metrics(m, profile))
            if isinstance(m := measured[r.name], Measurement)
            else Candidate(recipe=r, error=str(m))
            for r in profile.recipes
        ]
        chosen = domain.choose(cands)
        choices[pname] = chosen.recipe.name if chosen else None

    rows = [_row("fp32", fp32_before, base_size, base_p50, [])]
    for name, m in measured.items():
        picked_by = sorted(p for p, c in choices.items() if c == name)
        rows.append(_row(name, m, base_size, base_p50, picked_by))
    _print_table(rows)
    drift = fp32_after.latency_p50_ms / fp32_before.latency_p50_ms - 1
    print(
        f"\nFP32 p50 before/after the candidates: {fp32_before.latency_p50_ms:.2f} / "
        f"{fp32_after.latency_p50_ms:.2f} ms (drift {drift:+.1%}); threads={args.threads}"
    )
    print("profile choices: " + ", ".join(f"{p} -> {c or 'none fits'}" for p, c in sorted(choices.items())))

    checks = _checks(rows, choices)
    for label, ok, detail in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {label}: {detail}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "optimize",
                "model": "all-MiniLM-L6-v2",
                "time": datetime.now(UTC).isoformat(),
                "host": {
                    "machine": platform.machine(),
                    "python": platform.python_version(),
                    "onnxruntime": ort.__version__,
                    "threads": args.threads,
                },
                "fp32_p50_ms": {"before": fp32_before.latency_p50_ms, "after": fp32_after.latency_p50_ms},
                "rows": [asdict(r) for r in rows],
                "choices": choices,
                "targets": TARGETS,
                "checks": [{"check": c, "pass": ok, "detail": d} for c, ok, d in checks],
                "build_seconds": seconds,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")
    return 0


@dataclass(frozen=True)
class Row:
    recipe: str
    size_bytes: int = 0
    size_ratio: float = 0.0
    compressed_ratio: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    speedup_p50: float = 0.0
    cosine_mean: float = 0.0
    cosine_min: float = 0.0
    chosen_by: tuple[str, ...] = ()
    error: str | None = None


def _row(name: str, m: Measurement | str, base_size: int, base_p50: float, picked_by: list[str]) -> Row:
    if isinstance(m, str):
        return Row(recipe=name, error=m, chosen_by=tuple(picked_by))
    return Row(
        recipe=name,
        size_bytes=m.size_bytes,
        size_ratio=m.size_bytes / base_size,
        compressed_ratio=m.compressed_size_bytes / base_size,
        p50_ms=m.latency_p50_ms,
        p95_ms=m.latency_p95_ms,
        speedup_p50=base_p50 / m.latency_p50_ms,
        cosine_mean=m.fidelity.get("cosine_mean", float("nan")),
        cosine_min=m.fidelity.get("cosine_min", float("nan")),
        chosen_by=tuple(picked_by),
    )


def _print_table(rows: list[Row]) -> None:
    header = (
        f"{'recipe':<22} {'size':>7} {'zstd':>7} {'p50 ms':>8} {'p95 ms':>8} {'speedup':>8} "
        f"{'cos mean':>9} {'cos min':>8}  chosen by"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        if r.error:
            print(f"{r.recipe:<22} {r.error}")
            continue
        print(
            f"{r.recipe:<22} {r.size_ratio:>6.3f}x {r.compressed_ratio:>6.3f}x {r.p50_ms:>8.2f} {r.p95_ms:>8.2f} "
            f"{r.speedup_p50:>7.2f}x {r.cosine_mean:>9.4f} {r.cosine_min:>8.4f}  {', '.join(r.chosen_by)}"
        )


def _checks(rows: list[Row], choices: dict[str, str | None]) -> list[tuple[str, bool, str]]:
    by = {r.recipe: r for r in rows if r.error is None}
    int8 = choices.get(INT8_PROFILE)
    if int8 is None or int8 not in by:
        return [(f"{INT8_PROFILE} chooses an INT8 variant", False, "no candidate fits the profile")]
    r = by[int8]
    t = TARGETS
    out = [
        (
            f"{INT8_PROFILE} choice ({int8}) size <= {t['int8_size_ratio_max']}x",
            r.size_ratio <= t["int8_size_ratio_max"],
            f"{r.size_ratio:.3f}x",
        ),
        (
            f"{int8} p50 speed-up >= {t['int8_speedup_p50_min']}x",
            r.speedup_p50 >= t["int8_speedup_p50_min"],
            f"{r.speedup_p50:.2f}x",
        ),
        (
            f"{int8} mean cosine >= {t['int8_cosine_mean_min']}",
            r.cosine_mean >= t["int8_cosine_mean_min"],
            f"{r.cosine_mean:.4f}",
        ),
        (
            f"{int8} min cosine >= {t['int8_cosine_min_min']}",
            r.cosine_min >= t["int8_cosine_min_min"],
            f"{r.cosine_min:.4f}",
        ),
    ]
    if NAIVE_RECIPE in by:
        naive = by[NAIVE_RECIPE].cosine_mean
        out.append(
            (
                "the search beats naive per-tensor INT8 on mean cosine",
                r.cosine_mean > naive,
                f"{r.cosine_mean:.4f} vs {naive:.4f}",
            )
        )
    if MIXED_RECIPE in by:
        m = by[MIXED_RECIPE]
        ok = m.size_ratio <= t["mixed_size_ratio_max"] and m.cosine_mean >= t["mixed_cosine_mean_min"]
        out.append(
            (
                f"stretch: {MIXED_RECIPE} size <= {t['mixed_size_ratio_max']}x and mean cosine >= "
                f"{t['mixed_cosine_mean_min']}",
                ok,
                f"{m.size_ratio:.3f}x, {m.cosine_mean:.4f}",
            )
        )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
