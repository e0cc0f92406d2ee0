"""The telemetry service's contract: what it concludes from the device telemetry stream.

Devices publish windows (`shared.messages.device.TelemetryWindow`); the telemetry service
aggregates them per model digest and announces drift as an event, so the rollout service and
other systems react to a conclusion without re-reading every device's stream.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, FiniteFloat, StringConstraints, model_validator

from shared.messages.common import NAME_PATTERN, SHA256_HEX, Frozen
from shared.messages.device import TOKEN_PATTERN
from shared.messages.envelope import Message, register_message
from shared.messages.rollout import Gate, Verdict
from shared.messages.rpc import Rpc


@register_message
class DriftDetected(Message):
    """A model's output or behaviour statistic moved away from its reference beyond the threshold.

    `reference` is the digest's baseline for the metric (over its first windows once active, or, for
    output statistics, the model's outputs on its evaluation set: `reference_source`),
    `current` is over `[window_start, window_end)` across every device running the digest, and
    `score` is the method's distance between the two; higher means further apart.
    """

    TYPE = "drift.detected"

    model_digest: str = Field(pattern=SHA256_HEX)
    metric: str = Field(
        min_length=1, max_length=72, description="what drifted: output.<stat>, error_rate, latency_p95_ms, ..."
    )
    method: str = Field(min_length=1, max_length=64, description="how score was computed, e.g. zscore, psi")
    reference: FiniteFloat = Field(description="the metric's reference value")
    reference_source: Literal["first_periods", "eval_set"] = Field(
        default="first_periods",
        description=(
            "where the reference comes from: the digest's first periods of fleet telemetry, or the model's "
            "outputs on its evaluation set as the registry measured them (EvalOutputs)"
        ),
    )
    current: FiniteFloat = Field(description="the metric's value in this window")
    score: FiniteFloat
    threshold: FiniteFloat = Field(description="score at or over this is drift")
    devices: int = Field(ge=1, description="devices running the digest that contributed to the window")
    window_start: AwareDatetime
    window_end: AwareDatetime

    @model_validator(mode="after")
    def _window_and_score(self) -> DriftDetected:
        if self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        if self.score < self.threshold:
            raise ValueError(f"score {self.score} is under threshold {self.threshold}: that is not drift")
        return self


# --- what the telemetry service answers and publishes -------------------------------------------

MAX_FILTER_DIGESTS = 64  # digests named in one gate request (a model's variants, one per class at most)
MAX_SUMMARY_COHORTS = 500  # cohorts in one summary reply (busiest first); the rest are counted


class Cohort(Frozen):
    """Devices that report the same model digest, are of the same class, and run it from the same
    rollout wave (`rollout_id`/`wave` null: assigned by hand)."""

    model_digest: str = Field(pattern=SHA256_HEX)
    device_class: str = Field(pattern=NAME_PATTERN)
    rollout_id: str | None = Field(default=None, pattern=TOKEN_PATTERN)
    wave: int | None = Field(default=None, ge=0)


class OutputSummary(Frozen):
    count: int = Field(ge=0)
    mean: FiniteFloat
    std: FiniteFloat = Field(ge=0)


class CohortStats(Frozen):
    """One cohort's aggregate over `[since, until)`: every window that started in that range."""

    cohort: Cohort
    since: AwareDatetime
    until: AwareDatetime
    windows: int = Field(ge=0)
    devices: int = Field(ge=0, description="distinct devices (HyperLogLog: within about 3 %, exact when few)")
    requests: int = Field(ge=0)
    errors: int = Field(ge=0)
    error_rate: float | None = Field(default=None, ge=0, le=1, description="null without requests")
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_relative_error: float | None = Field(
        default=None, description="every latency quantile is within this share of the true one"
    )
    outputs: dict[str, OutputSummary] = Field(default_factory=dict)
    shadow_compared: int = Field(default=0, ge=0)
    shadow_agreement: float | None = Field(default=None, ge=0, le=1)
    cpu_percent_mean: float | None = None
    cpu_percent_max: float | None = None
    ram_mb_mean: float | None = None
    ram_mb_max: float | None = None


@register_message
class TelemetryRollup(Message):
    """One cohort's minute, published once on `slmops.rollup.<digest>.<class>.…` (SLMOPS_ROLLUPS) after
    the minute has ended and its late windows had time to arrive. Windows later still are counted in
    the service's aggregates (and gates) but not re-published."""

    TYPE = "telemetry.rollup"

    stats: CohortStats


@register_message
class EvaluateGate(Message):
    """Judge one gate on one rollout wave's telemetry, against the baseline cohort when it compares.

    The wave's cohort is every window reporting `rollout_id` and `wave` (or any wave up to it, with
    `through_wave`), of `device_class` if given, on one of `digests` if given, that started in
    `[since, until)`. The baseline cohort is the windows of the same classes, on one of
    `baseline_digests`, from devices not in this rollout, that started in `[baseline_since, until)`:
    windows are placed by their start, so a baseline window that was open when the wave started
    (a device's window lasts 10-30 s) needs an earlier start to count.
    """

    TYPE = "telemetry.evaluate_gate"

    rollout_id: str = Field(pattern=TOKEN_PATTERN)
    wave: int = Field(ge=0)
    through_wave: bool = Field(default=False, description="also count the devices of the rollout's earlier waves")
    device_class: str | None = Field(default=None, pattern=NAME_PATTERN, description="null = every class")
    digests: list[Annotated[str, StringConstraints(pattern=SHA256_HEX)]] = Field(
        default_factory=list, max_length=MAX_FILTER_DIGESTS, description="the new model's digests; empty = any"
    )
    baseline_digests: list[Annotated[str, StringConstraints(pattern=SHA256_HEX)]] = Field(
        default_factory=list, max_length=MAX_FILTER_DIGESTS, description="the previous model's digests"
    )
    since: AwareDatetime
    until: AwareDatetime | None = Field(default=None, description="null = now")
    baseline_since: AwareDatetime | None = Field(default=None, description="null = since")
    gate: Gate
    publish: bool = Field(default=True, description="also publish the gate.verdict event")

    @model_validator(mode="after")
    def _range(self) -> EvaluateGate:
        if self.until is not None and self.until <= self.since:
            raise ValueError("until must be after since")
        return self


class GateEvaluation(Frozen):
    """The answer to `EvaluateGate`: the verdict and every number it rests on."""

    verdict: Verdict
    method: Literal["threshold", "difference", "ratio", "mann_whitney"]
    observed: float | None = Field(description="the compared value: the wave's, or its difference or ratio")
    wave_value: float | None = Field(description="the metric over the wave's cohort")
    baseline: float | None = Field(default=None, description="the metric over the baseline cohort")
    samples: int = Field(ge=0)
    baseline_samples: int | None = Field(default=None, ge=0)
    min_samples: int = Field(ge=1)
    devices: int = Field(ge=0)
    baseline_devices: int | None = Field(default=None, ge=0)
    low: float | None = None
    high: float | None = None
    p_value: float | None = Field(default=None, ge=0, le=1)
    reason: str
    verdict_event_id: str | None = Field(default=None, description="the gate.verdict published, if asked to")


@register_message
class Summarize(Message):
    """Every cohort's aggregate over the last `seconds` (of one digest if given): for `slmops telemetry`."""

    TYPE = "telemetry.summary"

    model_digest: str | None = Field(default=None, pattern=SHA256_HEX)
    seconds: float = Field(default=300, gt=0, le=7 * 24 * 3600)


class TelemetrySummary(Frozen):
    cohorts: list[CohortStats] = Field(max_length=MAX_SUMMARY_COHORTS)
    omitted: int = Field(default=0, ge=0, description="cohorts beyond MAX_SUMMARY_COHORTS, not listed")
    position: int = Field(ge=0, description="the fold log position the numbers reflect")


MAX_REPORTERS_PAGE = 2000  # device ids in one answer: under the envelope cap with 64-character ids


@register_message
class ListReporters(Message):
    """The devices of a rollout wave that have sent at least one telemetry window on its digests, in
    id order, a page at a time. The rollout service counts a device healthy only once it is active
    *and* here: a device that reports success and then dies must not advance a rollout."""

    TYPE = "telemetry.reporters"

    rollout_id: str = Field(pattern=TOKEN_PATTERN)
    wave: int = Field(ge=0)
    digests: list[Annotated[str, StringConstraints(pattern=SHA256_HEX)]] = Field(
        default_factory=list, max_length=MAX_FILTER_DIGESTS, description="the wave's digests; empty = any"
    )
    after: str | None = Field(default=None, pattern=TOKEN_PATTERN, description="the last id of the previous page")
    limit: int = Field(default=MAX_REPORTERS_PAGE, ge=1, le=MAX_REPORTERS_PAGE)


class Reporters(Frozen):
    device_ids: list[Annotated[str, StringConstraints(pattern=TOKEN_PATTERN)]] = Field(max_length=MAX_REPORTERS_PAGE)
    more: bool = Field(description="ids beyond this page: ask again with after = the last one")
    position: int = Field(ge=0, description="the fold log position the answer reflects")


EVALUATE_GATE = Rpc(EvaluateGate, GateEvaluation)
SUMMARIZE = Rpc(Summarize, TelemetrySummary)
LIST_REPORTERS = Rpc(ListReporters, Reporters)
