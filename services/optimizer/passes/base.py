"""The template every optimization pass follows, the pass registry, and what a pass is given and returns.

A pass is a technique (`name`, e.g. "OnnxDynamicQuantization") with a typed, frozen config: every field
has a type, a default and a description, so a recipe is plain JSON that can be validated without running
anything, and a variant's lineage records the config with every default filled in.

`OptimizationPass.run` is the template (as in Olive's `olive_pass.run` around `_run_for_config`): it
checks the input, calls the technique's `_run`, then checks the output. The checks are why a recipe can
be trusted to compose: each pass reads a model that parses, fits in one file and passed onnx.checker,
and leaves one that passes onnx.checker and that onnxruntime can load on the CPU. Third-party failures
(onnx, onnxruntime's quantizers, which raise anything from AssertionError to KeyError) are turned into
`PassError` at one place, `third_party`, so a model a quantizer cannot handle fails its candidate with a
clear reason instead of crashing the search; our own bugs still propagate.

Passes register themselves by `name` when their class is defined; `build_pass` turns a recipe's
`PassSpec` into a configured pass.
"""

from __future__ import annotations

import fnmatch
import inspect
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import onnx
from pydantic import BaseModel, ConfigDict, ValidationError

from services.optimizer.errors import InvalidPassConfig, PassError, UnknownPass
from shared.messages.optimizer import PassSpec
from shared.messages.registry import MAX_MODEL_BYTES

# Operator domains every onnxruntime build implements; anything else is a contrib or custom operator
# that a device's runtime must provide, so it is reported as a requirement.
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})


@dataclass(frozen=True, kw_only=True)
class PassContext:
    """What a pass may use besides its input model.

    Attributes:
        workdir: a directory the caller owns, for scratch and intermediate files.
        eval_set: the model's evaluation set (input name -> array, samples on axis 0), used by passes that
            calibrate (static quantization); None when the model has none.
    """

    workdir: Path
    eval_set: dict[str, np.ndarray] | None = None


@dataclass(frozen=True, kw_only=True)
class PassResult:
    """What a pass produced, checked.

    Attributes:
        output: the output model's path.
        notes: human-readable facts about what the pass did (what it quantized, skipped, reached).
        contrib_ops: operators outside the standard ONNX domains in the output, as "domain.OpType"
            (e.g. "com.microsoft.MatMulNBits"): a device's onnxruntime must implement them.
        opset: the output's default-domain opset version.
    """

    output: Path
    notes: list[str]
    contrib_ops: list[str]
    opset: int


class PassConfig(BaseModel):
    """Base of every pass's config: unknown keys are errors (a typo must not silently use a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ConfigT = TypeVar("ConfigT", bound=PassConfig)

_REGISTRY: dict[str, type[OptimizationPass[Any]]] = {}


class OptimizationPass(ABC, Generic[ConfigT]):
    """One technique applied to one ONNX file, producing another.

    Subclasses set `name` (the technique, used as `PassSpec.type`) and `Config` (their `PassConfig`
    subclass), and implement `_run`. Defining such a class registers it.
    """

    name: ClassVar[str]
    Config: ClassVar[type[PassConfig]]

    def __init__(self, config: ConfigT) -> None:
        if not isinstance(config, self.Config):
            raise TypeError(f"{self.name} takes a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if inspect.isabstract(cls) or "name" not in cls.__dict__:
            return
        if (existing := _REGISTRY.get(cls.name)) is not None and existing.__qualname__ != cls.__qualname__:
            raise TypeError(f"pass name {cls.name!r} is already registered by {existing.__module__}")
        _REGISTRY[cls.name] = cls

    def spec(self) -> PassSpec:
        """This pass as a recipe step, with every config default filled in (what lineage records)."""
        return PassSpec(type=self.name, config=self.config.model_dump(mode="json"))

    def run(self, model_path: Path, output_path: Path, *, context: PassContext) -> PassResult:
        """Apply the pass to `model_path`, writing `output_path`.

        Args:
            model_path: a self-contained ONNX file (weights inside, under 2 GiB).
            output_path: where to write the result; its directory is created.
            context: the workdir and, for calibrating passes, the evaluation set.

        Returns:
            The checked result: notes, contrib operators and opset of the output.

        Raises:
            PassError: the input is missing, too large, not ONNX or invalid; the technique cannot handle
                the model; or the output fails onnx.checker or cannot be loaded by onnxruntime.
        """
        model = self._check_input(model_path)
        output_path.parent.mkdir(parents=True, exist_ok=True)
        notes = self._run(model, source=model_path, output=output_path, context=context)
        output = self._check_output(output_path)
        return PassResult(output=output_path, notes=notes, contrib_ops=contrib_ops(output), opset=default_opset(output))

    @abstractmethod
    def _run(self, model: onnx.ModelProto, *, source: Path, output: Path, context: PassContext) -> list[str]:
        """Write the optimized model to `output` and return notes on what was done.

        Args:
            model: the parsed input, for inspection; passes that modify it must work on a copy.
            source: the input's path, for tools that take a path.
            output: where to write the output.
            context: the workdir and evaluation set.
        """

    def calibration_arrays(
        self, model: onnx.ModelProto, context: PassContext, *, samples: int, purpose: str
    ) -> tuple[dict[str, np.ndarray], int]:
        """The evaluation-set arrays feeding the model's inputs, and how many rows to use (<= samples).

        Raises:
            PassError: no evaluation set, an input without an array, or no rows at all.
        """
        if context.eval_set is None:
            raise PassError(f"needs an evaluation set {purpose}, and none was given", pass_name=self.name)
        initializers = {i.name for i in model.graph.initializer}
        inputs = [i.name for i in model.graph.input if i.name not in initializers]
        if missing := [name for name in inputs if name not in context.eval_set]:
            raise PassError(f"the evaluation set has no array for input(s) {', '.join(missing)}", pass_name=self.name)
        arrays = {name: context.eval_set[name] for name in inputs}
        rows = min(samples, *(len(a) for a in arrays.values()))
        if rows == 0:
            raise PassError(f"the evaluation set is empty: no rows {purpose}", pass_name=self.name)
        return arrays, rows

    @contextmanager
    def third_party(self, call: str) -> Iterator[None]:
        """Turn any exception raised inside the block by `call` (a third-party tool) into a PassError.

        Quantizers signal "cannot handle this model" with whatever exception is at hand (assertions,
        KeyError on a missing value_info, onnxruntime's Fail), so the class says nothing; the message does.
        """
        try:
            yield
        except PassError:
            raise
        except Exception as exc:  # noqa: BLE001 - the boundary where third-party errors are mapped
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
            raise PassError(f"{call} failed: {type(exc).__name__}: {detail}", pass_name=self.name) from exc

    def _check_input(self, path: Path) -> onnx.ModelProto:
        if not path.is_file():
            raise PassError(f"input model {path} does not exist", pass_name=self.name)
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise PassError(
                f"input model is {size:,} bytes, over the {MAX_MODEL_BYTES:,}-byte limit of a single-file ONNX "
                "model (protobuf cannot hold 2 GiB); models that large are not supported",
                pass_name=self.name,
            )
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError, RuntimeWarning, ValueError
            raise PassError(f"input is not an ONNX model: {type(exc).__name__}: {exc}", pass_name=self.name) from exc
        if not model.graph.node:
            raise PassError("input is not an ONNX model: it has no graph nodes", pass_name=self.name)
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
            raise PassError(
                "input keeps weights in external data files; passes need a self-contained single-file model",
                pass_name=self.name,
            )
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as exc:
            raise PassError(f"input fails onnx.checker: {_first_line(exc)}", pass_name=self.name) from exc
        return model

    def _check_output(self, path: Path) -> onnx.ModelProto:
        if not path.is_file():
            raise PassError(f"produced no output file at {path}", pass_name=self.name)
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise PassError(f"output is {size:,} bytes, over the single-file ONNX limit", pass_name=self.name)
        model = onnx.load(str(path), load_external_data=False)
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as exc:
            raise PassError(f"output fails onnx.checker: {_first_line(exc)}", pass_name=self.name) from exc
        with self.third_party("onnxruntime (loading the output on the CPU)"):
            import onnxruntime as ort  # deferred: a planner validating recipes need not load onnxruntime

            options = ort.SessionOptions()
            options.log_severity_level = 3
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return model


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def registered_passes() -> dict[str, type[OptimizationPass[Any]]]:
    """Every registered pass by name, sorted, e.g. to list them in a CLI or a JSON schema."""
    return dict(sorted(_REGISTRY.items()))


def build_pass(spec: PassSpec) -> OptimizationPass[Any]:
    """The configured pass a recipe step describes.

    Raises:
        UnknownPass: no pass is registered as `spec.type`; the message lists the known types.
        InvalidPassConfig: `spec.config` does not validate; the message lists each field's problem.
    """
    cls = _REGISTRY.get(spec.type)
    if cls is None:
        raise UnknownPass(spec.type, known=list(_REGISTRY))
    try:
        config = cls.Config.model_validate(spec.config)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or '(config)'}: {e['msg']}" for e in exc.errors()]
        if any(e["type"] == "extra_forbidden" for e in exc.errors()):
            problems.append(f"{spec.type} takes: {', '.join(cls.Config.model_fields)}")
        raise InvalidPassConfig(spec.type, problems=problems) from None
    return cls(config)


def resolve_nodes(model: onnx.ModelProto, patterns: Sequence[str]) -> tuple[list[str], list[str]]:
    """Node names in the main graph matching any of `patterns` (exact names or fnmatch globs).

    Returns:
        The matching names in graph order, and the patterns that matched nothing (worth a note: a recipe
        is written once for many models, so a pattern that matches nothing is not an error).
    """
    names = [n.name for n in model.graph.node if n.name]
    matched = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    return matched, unmatched


def select_nodes(
    model: onnx.ModelProto, *, op_types: Sequence[str], include: Sequence[str], exclude: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Names of nodes of `op_types` to leave alone: those matching `exclude`, and, when `include` is not
    empty, those matching none of `include` (quantizers take exclusions; a recipe often means "only these").

    Returns:
        The node names to exclude, and the patterns of either list that matched no node.
    """
    excluded, unmatched = resolve_nodes(model, exclude)
    if include:
        included, unmatched_includes = resolve_nodes(model, include)
        keep = set(included)
        candidates = [n.name for n in model.graph.node if n.op_type in op_types and n.name and n.name not in keep]
        excluded = sorted(set(excluded) | set(candidates))
        unmatched = unmatched + unmatched_includes
    return excluded, unmatched


def exclusion_notes(excluded: Sequence[str], unmatched: Sequence[str]) -> list[str]:
    """Notes saying which nodes a pass left alone and which patterns matched nothing."""
    notes = []
    if excluded:
        shown = ", ".join(excluded[:8]) + (f" and {len(excluded) - 8} more" if len(excluded) > 8 else "")
        notes.append(f"left {len(excluded)} node(s) alone: {shown}")
    if unmatched:
        notes.append(f"node pattern(s) matched no node: {', '.join(unmatched)}")
    return notes


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each "domain.OpType" (plain OpType for the default domain) the main graph has."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        key = f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        counts[key] = counts.get(key, 0) + 1
    return counts


def contrib_ops(model: onnx.ModelProto) -> list[str]:
    """Sorted "domain.OpType" of every operator outside the standard domains, subgraphs included."""
    found: set[str] = set()
    for graph in _graphs(model.graph):
        found.update(f"{n.domain}.{n.op_type}" for n in graph.node if n.domain not in STANDARD_DOMAINS)
    return sorted(found)


def default_opset(model: onnx.ModelProto) -> int:
    """The model's default-domain opset version (0 when it declares none, which onnx.checker rejects)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _graphs(g)


def op_changes(before: onnx.ModelProto, after: onnx.ModelProto) -> str:
    """A one-line summary of how operator counts changed, e.g. "MatMul 42->6, MatMulInteger 0->36"."""
    old, new = op_counts(before), op_counts(after)
    ops = sorted(old.keys() | new.keys())
    changed = [f"{op} {old.get(op, 0)}->{new.get(op, 0)}" for op in ops if old.get(op, 0) != new.get(op, 0)]
    return "operators: " + (", ".join(changed) if changed else "unchanged")
