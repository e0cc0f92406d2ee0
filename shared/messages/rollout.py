"""The rollout contract: the commands that steer a staged rollout and the events it leaves behind.

The plan (selector, waves, gates) is validated here, at the edge, so a rollout that could never
finish (waves not reaching 100 %, a gate on an unknown metric) is rejected to the DLQ with a reason
instead of failing half-way through a fleet. Events are facts for dashboards and `--watch`; the
rollout service's own state lives in KV `rollouts`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from shared.messages.common import MAX_CONFIG_BYTES, NAME_PATTERN, VERSION_PATTERN, Config, Frozen
from shared.messages.device import TOKEN_PATTERN, DeviceId, Labels
from shared.messages.envelope import Message, register_message

ROLLOUT_ID_PATTERN = TOKEN_PATTERN
# Metrics a gate can be evaluated on, all computed from telemetry windows; `output.<stat>` names
# one of the devices' output statistics.
LATENCY_METRICS = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")
GATE_METRICS = ("error_rate", *LATENCY_METRICS, "shadow_agreement", "cpu_percent", "ram_mb")

# Caps on a rollout's plan, so a command stays small and its evaluation bounded. A selector names
# devices one by one only for small targeted rollouts; a fleet is selected by labels and classes.
MAX_SELECTED_DEVICES = 1000
MAX_SELECTOR_VALUES = 64  # device classes, architectures, accelerators: each
MAX_WAVES = 20
BASE_VARIANT = "base"  # the name a pin gives the base model (variants are named otherwise)
MAX_GATES = 32  # per rollout, and per wave
MAX_NAME_CHARS = 64  # one device class, architecture or accelerator in a selector

RolloutId = Annotated[str, StringConstraints(pattern=ROLLOUT_ID_PATTERN)]
SelectorValue = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_CHARS)]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]  # a device class, an optimization profile
Verdict = Literal["Successful", "Failed", "Inconclusive"]
Comparator = Literal["<", "<=", ">", ">="]
Baseline = Literal["difference", "ratio", "mann_whitney"]
RolloutState = Literal[
    "pending", "installing", "soaking", "paused", "rolling_back", "rolled_back", "aborted", "completed"
]


class Selector(Frozen):
    """Which devices a rollout targets: every condition must hold; an empty selector selects all."""

    labels: Labels = Field(default_factory=dict, description="label -> required value (equality)")
    device_classes: list[SelectorValue] = Field(
        default_factory=list, max_length=MAX_SELECTOR_VALUES, description="any of these classes; empty = any"
    )
    device_ids: list[DeviceId] = Field(
        default_factory=list, max_length=MAX_SELECTED_DEVICES, description="only these devices; empty = any"
    )
    arch: list[SelectorValue] = Field(
        default_factory=list, max_length=MAX_SELECTOR_VALUES, description="any of these architectures; empty = any"
    )
    min_ram_mb: int | None = Field(default=None, ge=1)
    accelerators: list[SelectorValue] = Field(
        default_factory=list, max_length=MAX_SELECTOR_VALUES, description="the device must have all of these"
    )


class Gate(Frozen):
    """A telemetry check on a wave's devices after soaking: passes when `observed <comparator> threshold`.

    With `compare_to_baseline`, observed is the wave's value minus (difference) or divided by (ratio)
    that of the devices of the same classes still on the previous version. `mann_whitney` (latency
    metrics only) is a statistical judgement instead: `threshold` is the largest latency ratio
    wave/baseline tolerated (1.1 = "at most 10 % slower"), estimated by Hodges-Lehmann on the merged
    histograms with its `confidence` interval: Successful when the whole interval is within the
    threshold, Failed when the whole interval is beyond it, Inconclusive otherwise. Under
    `min_samples` (on either side, when compared): Inconclusive, not a guess.
    """

    metric: str = Field(description="one of GATE_METRICS, or output.<stat> for a device output statistic")
    comparator: Comparator
    threshold: float = Field(allow_inf_nan=False)
    min_samples: int = Field(default=100, ge=1, description="requests summed over the wave's devices")
    compare_to_baseline: Baseline | None = Field(default=None, description="null = absolute threshold")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="for mann_whitney: the interval's confidence")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value in GATE_METRICS or (value.startswith("output.") and len(value) > len("output.")):
            return value
        raise ValueError(f"unknown gate metric {value!r}; use one of {', '.join(GATE_METRICS)} or output.<stat>")

    @model_validator(mode="after")
    def _statistical_test_on_latency(self) -> Gate:
        if self.compare_to_baseline == "mann_whitney":
            if self.metric not in LATENCY_METRICS:
                raise ValueError(
                    f"mann_whitney compares latency distributions: use it with {', '.join(LATENCY_METRICS)}"
                )
            if self.comparator not in ("<", "<="):
                raise ValueError(
                    "mann_whitney judges 'not slower than the baseline by more than threshold': use < or <="
                )
            if self.threshold <= 0:
                raise ValueError("mann_whitney's threshold is a latency ratio: it must be > 0 (e.g. 1.1)")
        return self


class Wave(Frozen):
    """A step of the rollout: the share of the selected fleet that runs the new model once it ends."""

    percent: float = Field(gt=0, le=100, description="cumulative share of selected devices, stratified by class")
    gates: list[Gate] | None = Field(default=None, max_length=MAX_GATES, description="null = the rollout's gates")
    soak_seconds: float | None = Field(default=None, ge=0, description="null = the rollout's soak_seconds")


class WavePlan(Frozen):
    """How many devices a wave adds, per device class (every class gets its canary)."""

    index: int = Field(ge=0)
    percent: float = Field(gt=0, le=100)
    devices: int = Field(ge=0)
    by_class: dict[str, int] = Field(default_factory=dict)


# --- commands -----------------------------------------------------------------------------


@register_message
class StartRollout(Message):
    """Roll `model` at `ref` (a version or an alias) out to the selected devices, wave by wave."""

    TYPE = "rollout.start"

    rollout_id: RolloutId | None = Field(default=None, description="null = derived from the command id")
    model: str = Field(pattern=NAME_PATTERN)
    ref: str = Field(pattern=VERSION_PATTERN, description="version or alias, resolved once at start")
    selector: Selector = Field(default_factory=Selector)
    waves: list[Wave] = Field(
        default_factory=lambda: [Wave(percent=p) for p in (1, 10, 50, 100)], min_length=1, max_length=MAX_WAVES
    )
    gates: list[Gate] = Field(
        default_factory=list, max_length=MAX_GATES, description="checked after every wave unless it sets its own"
    )
    install_threshold: float = Field(default=0.95, gt=0, le=1, description="share of a wave that must be active")
    install_timeout_seconds: float = Field(default=3600, gt=0, description="under install_threshold by then: fail")
    soak_seconds: float = Field(default=300, ge=0, description="telemetry collected after install, before gates")
    max_download_starts_per_second: float | None = Field(
        default=None, gt=0, description="download rate limit: desired-state writes per second; null = unlimited"
    )
    shadow: bool = Field(default=False, description="devices also run the previous model and report agreement")
    variant: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description=f"every device gets this registered variant ('{BASE_VARIANT}': the base model), or is excluded "
        "if it cannot run it; null = the best one per device",
    )
    smoke_test: bool = Field(default=True, description="devices run the version's evaluation set before switching")
    profiles: dict[Name, Name] = Field(
        default_factory=dict,
        max_length=MAX_SELECTOR_VALUES,
        description="device class -> optimization profile: a device of the class gets the variant built with that "
        "profile when it can run it, before any other; a pinned variant still is the only candidate",
    )
    config: Config | None = Field(
        default=None,
        description=f"application settings delivered with the model to every device of the rollout, at most "
        f"{MAX_CONFIG_BYTES} bytes as JSON; null = none",
    )
    on_failure: Literal["rollback", "pause"] = "rollback"
    on_inconclusive: Literal["pause", "rollback"] = "pause"

    @field_validator("waves")
    @classmethod
    def _waves_climb_to_100(cls, waves: list[Wave]) -> list[Wave]:
        shares = [w.percent for w in waves]
        if any(b <= a for a, b in zip(shares, shares[1:], strict=False)):
            raise ValueError(f"wave percentages must be strictly increasing, got {shares}")
        if shares[-1] != 100:
            raise ValueError(f"the last wave must be 100 percent, got {shares[-1]}")
        return waves


class _RolloutCommand(Message):
    rollout_id: RolloutId
    reason: str | None = Field(default=None, max_length=2000)


@register_message
class PauseRollout(_RolloutCommand):
    """Stop advancing; devices keep what they run, a wave in flight finishes installing."""

    TYPE = "rollout.pause"


@register_message
class ResumeRollout(_RolloutCommand):
    """Continue a paused rollout from where it stopped."""

    TYPE = "rollout.resume"


@register_message
class AbortRollout(_RolloutCommand):
    """End the rollout for good without reverting: devices keep what they run (see RollbackRollout)."""

    TYPE = "rollout.abort"


@register_message
class RollbackRollout(_RolloutCommand):
    """Put every device the rollout touched back on the model it ran before."""

    TYPE = "rollout.rollback"


# --- events -------------------------------------------------------------------------------


@register_message
class RolloutStarted(Message):
    """A rollout was accepted: its spec, the version `ref` resolved to, and the wave plan."""

    TYPE = "rollout.started"

    rollout_id: RolloutId
    spec: StartRollout
    version: str = Field(pattern=VERSION_PATTERN, description="what spec.ref resolved to")
    targets: int = Field(ge=0, description="devices selected")
    plan: list[WavePlan] = Field(max_length=MAX_WAVES)


@register_message
class RolloutStateChanged(Message):
    TYPE = "rollout.state_changed"

    rollout_id: RolloutId
    from_state: RolloutState
    to_state: RolloutState
    wave: int | None = Field(default=None, ge=0, description="index of the current wave")
    reason: str | None = None


@register_message
class WaveStarted(Message):
    TYPE = "wave.started"

    rollout_id: RolloutId
    wave: WavePlan


@register_message
class WaveCompleted(Message):
    """A wave's evaluation ended; `verdict` combines its gates (any Failed, else any Inconclusive)."""

    TYPE = "wave.completed"

    rollout_id: RolloutId
    wave: int = Field(ge=0)
    percent: float = Field(gt=0, le=100)
    devices: int = Field(ge=0)
    installed: int = Field(ge=0)
    failed: int = Field(ge=0, description="devices that reported failed or rolled_back")
    verdict: Verdict

    @model_validator(mode="after")
    def _counts_within_wave(self) -> WaveCompleted:
        if self.installed + self.failed > self.devices:
            raise ValueError(f"installed + failed ({self.installed + self.failed}) exceeds devices ({self.devices})")
        return self


@register_message
class GateVerdict(Message):
    """One gate of one wave decided, with the numbers it was decided on."""

    TYPE = "gate.verdict"

    rollout_id: RolloutId
    wave: int = Field(ge=0)
    metric: str = Field(description="a gate metric, or install_rate for the install threshold")
    comparator: Comparator
    threshold: float
    compare_to_baseline: Baseline | None = None
    observed: float | None = Field(description="null when there were no samples")
    baseline: float | None = Field(default=None, description="the previous version's value, when compared")
    samples: int = Field(ge=0)
    min_samples: int = Field(ge=1)
    verdict: Verdict
    device_class: str | None = Field(default=None, description="the class judged; null = the whole wave")
    baseline_samples: int | None = Field(default=None, ge=0, description="when compared to the baseline")
    low: float | None = Field(default=None, description="mann_whitney: the lower end of observed's interval")
    high: float | None = Field(default=None, description="mann_whitney: the upper end of observed's interval")
    p_value: float | None = Field(default=None, ge=0, le=1, description="mann_whitney: one-sided, wave slower")
    reason: str | None = Field(default=None, max_length=2000, description="why, in words")


@register_message
class RolloutCompleted(Message):
    TYPE = "rollout.completed"

    rollout_id: RolloutId
    model: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    devices: int = Field(ge=0, description="devices running the new version")
    by_digest: dict[str, int] = Field(default_factory=dict, description="artifact digest (variant) -> devices")


@register_message
class RolloutRolledBack(Message):
    """Every device the rollout touched was told to run its previous model again."""

    TYPE = "rollout.rolled_back"

    rollout_id: RolloutId
    trigger: Literal["gate", "install", "manual"]
    wave: int | None = Field(default=None, ge=0, description="wave in progress when it was triggered")
    reason: str
    devices: int = Field(ge=0, description="devices whose desired state was reverted")
