"""Running a recipe: its passes in order, each reading the previous one's output.

Every pass is built (and its config validated) before the first one runs, so a recipe with a typo
fails in milliseconds, not after a quarter of an hour of quantization. Intermediate models are written
under `workdir/<recipe name>/`, which the caller owns (and may inspect when a pass fails); the last pass
writes the requested output. The result records each pass with its config as resolved, every default
filled in, because that, not the recipe as typed, is what a variant's lineage must say was run.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.optimizer.errors import InvalidPassConfig, PassError, UnknownPass
from services.optimizer.passes import OptimizationPass, PassContext, build_pass
from shared.messages.optimizer import PassSpec, Recipe


@dataclass(frozen=True, kw_only=True)
class PassRecord:
    """One pass as it ran: the resolved spec, what it noted, and what it took."""

    spec: PassSpec
    notes: list[str]
    contrib_ops: list[str]
    seconds: float
    output_bytes: int


@dataclass(frozen=True, kw_only=True)
class RecipeResult:
    """A recipe's output model and how it was made.

    Attributes:
        path: the final model.
        passes: each pass in order, with its resolved config.
        notes: every pass's notes, prefixed with the pass's type.
        contrib_ops: "domain.OpType" of non-standard operators in the final model (runtime requirements).
        opset: the final model's default-domain opset.
    """

    path: Path
    passes: list[PassRecord]
    notes: list[str]
    contrib_ops: list[str]
    opset: int

    @property
    def resolved_recipe(self) -> list[PassSpec]:
        """The recipe with every default filled in, for lineage."""
        return [p.spec for p in self.passes]


def build_recipe(recipe: Recipe) -> list[OptimizationPass[Any]]:
    """Every pass of `recipe`, configured; nothing runs.

    Raises:
        UnknownPass, InvalidPassConfig: a step names no registered pass or has an invalid config; the
            message names the recipe and the step.
    """
    passes = []
    for index, spec in enumerate(recipe.passes, start=1):
        try:
            passes.append(build_pass(spec))
        except UnknownPass as exc:
            raise UnknownPass(spec.type, known=exc.known, recipe=f"{recipe.name}, step {index}") from None
        except InvalidPassConfig as exc:
            raise InvalidPassConfig(spec.type, problems=exc.problems, recipe=f"{recipe.name}, step {index}") from None
    return passes


def run_recipe(recipe: Recipe, base: Path, output: Path, *, context: PassContext) -> RecipeResult:
    """Apply `recipe`'s passes to `base` in order and write the result to `output`.

    Args:
        recipe: the passes and their configs.
        base: the base model (a self-contained ONNX file).
        output: where the final model goes; its directory is created.
        context: the workdir for intermediate files and the evaluation set for calibrating passes.

    Returns:
        The output path, each pass's record, the collected notes and the final model's requirements.

    Raises:
        UnknownPass, InvalidPassConfig: the recipe is wrong (raised before any pass runs).
        PassError: a pass could not handle the model; the message names the recipe and the pass.
    """
    passes = build_recipe(recipe)
    workdir = context.workdir / recipe.name
    workdir.mkdir(parents=True, exist_ok=True)
    step_context = PassContext(workdir=workdir, eval_set=context.eval_set)
    current = _private_copy(base, workdir)
    records: list[PassRecord] = []
    contrib: list[str] = []
    opset = 0
    for index, optimization in enumerate(passes, start=1):
        target = output if index == len(passes) else workdir / f"{index:02d}-{optimization.name}.onnx"
        started = time.perf_counter()
        try:
            result = optimization.run(current, target, context=step_context)
        except PassError as exc:
            raise PassError(exc.reason, pass_name=f"{exc.pass_name} (step {index})", recipe=recipe.name) from exc
        records.append(
            PassRecord(
                spec=optimization.spec(),
                notes=result.notes,
                contrib_ops=result.contrib_ops,
                seconds=time.perf_counter() - started,
                output_bytes=target.stat().st_size,
            )
        )
        contrib, opset, current = result.contrib_ops, result.opset, target
    return RecipeResult(
        path=output,
        passes=records,
        notes=[f"{r.spec.type}: {note}" for r in records for note in r.notes],
        contrib_ops=contrib,
        opset=opset,
    )


def _private_copy(base: Path, workdir: Path) -> Path:
    """The base model under this recipe's own directory (a hard link when possible).

    onnxruntime's quantizers write scratch files beside their input (`<name>-inferred.onnx`) and
    delete them afterwards: recipes running concurrently on one shared input delete each other's.
    """
    staged = workdir / "00-base.onnx"
    staged.unlink(missing_ok=True)
    try:
        os.link(base, staged)
    except OSError:
        shutil.copyfile(base, staged)
    return staged
