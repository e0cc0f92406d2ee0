"""The optimizer's contract: device profiles and recipes, the command, and the search's events.

A recipe is data (technique names and their configs), not code, so a profile sent by another
system can name passes without importing onnxruntime, and a variant's lineage records exactly
what was run. Events carry every candidate with its metrics, not only the winner, because a user
deciding between size and fidelity needs the whole front, and a rejection must say why.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, FiniteFloat, StringConstraints, model_validator

from shared.messages.common import NAME_PATTERN, SHA256_HEX, VERSION_PATTERN, Frozen
from shared.messages.envelope import ID_PATTERN, Message, register_message
from shared.messages.rpc import Rpc

PASS_TYPE_PATTERN = r"^[A-Z][A-Za-z0-9]{0,63}$"
# Caps on a search, so a command stays small and the work it asks for is bounded: every recipe is
# built and evaluated, so the number of recipes is the number of candidates an optimization runs.
MAX_RECIPES = 32  # per profile, or in a command's override (the built-in profiles have 3 to 6)
MAX_PASSES = 16  # per recipe (the techniques chain 1 to 3)
MAX_PASS_CONFIG_KEYS = 64  # top-level keys of one pass's config
MAX_METRICS = 64  # fidelity metrics of a candidate, and budget failures listed

ProfileName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
FidelityBudget = Literal["cosine_mean", "cosine_min", "top1_agreement", "task_metric"]


class PassSpec(Frozen):
    """One pass of a recipe: the technique's class name and its configuration."""

    type: str = Field(pattern=PASS_TYPE_PATTERN, description="technique, e.g. OnnxDynamicQuantization")
    config: dict[str, object] = Field(
        default_factory=dict, max_length=MAX_PASS_CONFIG_KEYS, description="the pass's own config model, as JSON"
    )


class Recipe(Frozen):
    """An ordered list of passes, applied to the base model one after the other."""

    name: str = Field(pattern=NAME_PATTERN)
    passes: list[PassSpec] = Field(min_length=1, max_length=MAX_PASSES)


class Budgets(Frozen):
    """What a variant must meet on a device class; a budget left null is not checked."""

    max_size_bytes: int | None = Field(default=None, ge=1, description="size on disk, uncompressed")
    max_p95_latency_ms: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="limit on the device: p95 measured on the optimizer host x speed_factor must not exceed it",
    )
    min_fidelity: dict[FidelityBudget, float] = Field(
        default_factory=dict, description="fidelity metric -> lowest acceptable value, e.g. cosine_mean: 0.99"
    )
    max_kl: float | None = Field(default=None, ge=0, allow_inf_nan=False, description="for logits outputs")


class DeviceProfile(Frozen):
    """A device class as the optimizer sees it: how fast it is, what it allows, what to try."""

    name: ProfileName
    device_class: str = Field(pattern=NAME_PATTERN)
    speed_factor: float = Field(
        gt=0, allow_inf_nan=False, description="device latency / optimizer-host latency, e.g. 4.0 = 4x slower"
    )
    budgets: Budgets
    recipes: list[Recipe] = Field(min_length=1, max_length=MAX_RECIPES)

    @model_validator(mode="after")
    def _unique_recipe_names(self) -> DeviceProfile:
        names = [r.name for r in self.recipes]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"recipe names must be unique within a profile; repeated: {', '.join(dupes)}")
        return self


class CandidateMetrics(Frozen):
    """A candidate measured on the model's evaluation set, on the optimizer host."""

    size_bytes: int = Field(ge=1)
    compressed_size_bytes: int = Field(ge=1, description="zstd-compressed size: what pruning buys on CPU")
    latency_p50_ms: float = Field(ge=0, allow_inf_nan=False, description="optimizer host, fixed thread count")
    latency_p95_ms: float = Field(ge=0, allow_inf_nan=False, description="optimizer host, fixed thread count")
    threads: int = Field(ge=1, description="intra-op threads used to measure latency")
    fidelity: dict[str, FiniteFloat] = Field(
        max_length=MAX_METRICS,
        description="against the base model: cosine_mean, cosine_min, top1_agreement, kl, task metric by name",
    )
    meets_budget: bool
    failures: list[str] = Field(
        default_factory=list, max_length=MAX_METRICS, description="one line per budget missed, with the gap"
    )

    @model_validator(mode="after")
    def _verdict_matches_failures(self) -> CandidateMetrics:
        if self.meets_budget == bool(self.failures):
            raise ValueError("meets_budget must be true exactly when failures is empty")
        return self


class Candidate(Frozen):
    """One recipe tried: its metrics, or the error that stopped it before it could be measured."""

    recipe: Recipe
    metrics: CandidateMetrics | None = None
    error: str | None = Field(default=None, description="why a pass or the evaluation could not run")
    pareto: bool = Field(default=False, description="on the size / latency / fidelity Pareto front")

    @model_validator(mode="after")
    def _metrics_or_error(self) -> Candidate:
        if (self.metrics is None) == (self.error is None):
            raise ValueError("a candidate has either metrics or an error, not both or neither")
        return self


class RegisteredVariant(Frozen):
    """A candidate the optimizer registered (through `model.variant.register`) as a variant."""

    variant: str = Field(pattern=NAME_PATTERN)
    digest: str = Field(pattern=SHA256_HEX)
    recipe: str = Field(pattern=NAME_PATTERN, description="name of the recipe that produced it")
    metrics: CandidateMetrics


class BudgetMiss(Frozen):
    """For a budget no candidate met: the best any candidate achieved, and by how much it missed."""

    budget: str = Field(description="max_size_bytes, max_p95_latency_ms, max_kl or min_fidelity.<metric>")
    limit: float
    best: float = Field(description="closest value any candidate reached (latency already scaled to the device)")
    best_candidate: str = Field(pattern=NAME_PATTERN)
    gap: float = Field(description="|best - limit|, in the budget's unit")


class _Outcome(Message):
    """Fields every optimizer event shares, so a watcher can filter one search's events."""

    optimization_id: str = Field(pattern=ID_PATTERN, description="envelope id of the optimize.request command")
    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)


# --- commands -----------------------------------------------------------------------------


@register_message
class OptimizeModel(Message):
    """Search for edge variants of a registered version under a device profile's budgets.

    Its type is not under `model.` on purpose: the registry's durable consumer owns
    `slmops.cmd.model.>` on a work-queue stream, where filters must not overlap.
    """

    TYPE = "optimize.request"

    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    profile: ProfileName | DeviceProfile = Field(description="a profile name known to the optimizer, or inline")
    recipes: list[Recipe] | None = Field(
        default=None, min_length=1, max_length=MAX_RECIPES, description="replace the profile's recipes"
    )


# --- events -------------------------------------------------------------------------------


@register_message
class OptimizationProgress(_Outcome):
    """One candidate moved on; `completed` of `total` candidates are finished."""

    TYPE = "optimization.progress"

    candidate: str = Field(pattern=NAME_PATTERN, description="recipe name")
    stage: Literal["queued", "optimizing", "evaluating", "evaluated", "failed"]
    completed: int = Field(ge=0)
    total: int = Field(ge=1)
    metrics: CandidateMetrics | None = Field(default=None, description="set when stage is evaluated")
    error: str | None = Field(default=None, description="set when stage is failed")

    @model_validator(mode="after")
    def _completed_within_total(self) -> OptimizationProgress:
        if self.completed > self.total:
            raise ValueError(f"completed ({self.completed}) exceeds total ({self.total})")
        return self


@register_message
class OptimizationCompleted(_Outcome):
    """At least one candidate met the budgets and was registered as a variant."""

    TYPE = "optimization.completed"

    base_digest: str = Field(pattern=SHA256_HEX)
    profile: DeviceProfile = Field(description="the profile as resolved, recipes override applied")
    registered: list[RegisteredVariant] = Field(min_length=1, max_length=MAX_RECIPES)
    candidates: list[Candidate] = Field(min_length=1, max_length=MAX_RECIPES)


@register_message
class OptimizationFailed(_Outcome):
    """No candidate met the budgets, or the search could not run at all (then `candidates` is empty)."""

    TYPE = "optimization.failed"

    reason: str = Field(min_length=1)
    profile: DeviceProfile | None = Field(default=None, description="null when the profile could not be resolved")
    candidates: list[Candidate] = Field(default_factory=list, max_length=MAX_RECIPES)
    misses: list[BudgetMiss] = Field(default_factory=list, max_length=MAX_METRICS)


# --- requests (request/reply on slmops.rpc.optimizer.*) -------------------------------------


@register_message
class ListProfiles(Message):
    """The device profiles the optimizer knows (`deploy/profiles`, or its SLMOPS_PROFILES_DIR): what a
    blueprint's `profiles` may name, and the class each is measured for."""

    TYPE = "optimizer.profiles"


LIST_PROFILES = Rpc(ListProfiles, list[DeviceProfile])
