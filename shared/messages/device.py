"""The device protocol: what a device says (hello, install status, telemetry) and what it is told.

A device may be our agent or any third-party program, so everything it sends is validated as
strictly as a command from another system. Device ids become NATS subject tokens
(`slmops.device.<id>.status`), hence the narrow id pattern. Telemetry carries aggregates only:
no model has a field for raw inputs or outputs, so none can leave a device through this contract.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, FiniteFloat, StringConstraints, model_validator

from shared.messages.common import NAME_PATTERN, SHA256_HEX, VERSION_PATTERN, Frozen
from shared.messages.envelope import Message, register_message

# One NATS subject token and one KV key token: a value can never add a level or a wildcard.
TOKEN_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"
DEVICE_ID_PATTERN = TOKEN_PATTERN
LABEL_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$"
STAT_NAME_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"
TRACEPARENT_PATTERN = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
ORT_VERSION_PATTERN = r"^\d+\.\d+(\.\d+)?$"
# Caps on what a device lists, so every report stays small (the device streams' max_msg_size is
# 64 KiB, shared/topology.py): far over what any device has, far under what would strain a consumer.
MAX_LABELS = 32  # labels on a device (as on a model in the registry)
MAX_CAPABILITIES = 16  # accelerators, and execution providers, each
MAX_CAPABILITY_CHARS = 64  # one accelerator or execution provider name
MAX_OUTPUT_STATS = 256  # named output statistics in one telemetry window
MAX_HISTOGRAM_BOUNDS = 64

DeviceId = Annotated[str, StringConstraints(pattern=DEVICE_ID_PATTERN)]
Digest = Annotated[str, StringConstraints(pattern=SHA256_HEX)]
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN)]
Labels = Annotated[dict[LabelKey, Annotated[str, StringConstraints(max_length=256)]], Field(max_length=MAX_LABELS)]
Capability = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CAPABILITY_CHARS)]
StatName = Annotated[str, StringConstraints(pattern=STAT_NAME_PATTERN)]

Slot = Literal["a", "b"]
# The install state machine, in order; `failed` and `rolled_back` may follow any step. `active` is
# reported after the atomic slot switch, and also directly (no download) when the desired digest is
# already in a slot, so "is the device on the new model" is one comparison.
InstallStep = Literal[
    "received",
    "downloading",
    "downloaded",
    "verifying",
    "verified",
    "loading",
    "smoke_testing",
    "active",
    "failed",
    "rolled_back",
]


@register_message
class DeviceHello(Message):
    """A device announces itself and its capabilities; re-sent as its heartbeat.

    Sent at start and then periodically: the whole capability set each time, so the inventory
    converges even if an earlier hello was lost, and last-seen is simply the latest envelope time.
    """

    TYPE = "device.hello"

    device_id: DeviceId
    device_class: str = Field(pattern=NAME_PATTERN, description="fleet class, e.g. rpi5, jetson, gateway")
    arch: str = Field(min_length=1, max_length=32, description="machine architecture, e.g. x86_64, aarch64")
    ram_mb: int = Field(ge=1, description="total RAM in MiB")
    cpu_count: int = Field(ge=1)
    accelerators: list[Capability] = Field(
        default_factory=list, max_length=MAX_CAPABILITIES, description="e.g. cuda, npu; empty = CPU only"
    )
    onnxruntime_version: str = Field(pattern=ORT_VERSION_PATTERN, description="release number only, e.g. 1.20.1")
    execution_providers: list[Capability] = Field(
        min_length=1, max_length=MAX_CAPABILITIES, description="e.g. CPUExecutionProvider, in preference order"
    )
    labels: Labels = Field(default_factory=dict)
    agent_version: str = Field(min_length=1, max_length=64)
    active_digest: Digest | None = Field(default=None, description="model serving now; null = none installed")


class ProgressBytes(Frozen):
    """Download progress; `total` is the artifact size from the desired state."""

    done: int = Field(ge=0)
    total: int = Field(ge=0)

    @model_validator(mode="after")
    def _done_within_total(self) -> ProgressBytes:
        if self.done > self.total:
            raise ValueError(f"progress done ({self.done}) exceeds total ({self.total})")
        return self


@register_message
class DeviceStatus(Message):
    """One step of installing the desired state the device saw at KV revision `desired_revision`.

    The revision (not only the digest) identifies the request, so a rollout can tell a status
    about its own write from a late status about an older one for the same digest.
    """

    TYPE = "device.status"

    device_id: DeviceId
    desired_revision: int = Field(ge=1, description="revision of the KV entry desired.<device_id> acted on")
    digest: Digest = Field(description="digest of the desired model this step is about")
    step: InstallStep
    slot: Slot | None = Field(
        default=None, description="slot being written during install; the serving slot once active or rolled back"
    )
    active_digest: Digest | None = Field(default=None, description="model serving after this step")
    reason: str | None = Field(default=None, max_length=2000, description="why, for failed and rolled_back")
    attempt: int = Field(default=1, ge=1, description="download attempt number, 1-based")
    progress: ProgressBytes | None = None

    @model_validator(mode="after")
    def _reason_when_things_went_wrong(self) -> DeviceStatus:
        if self.step in ("failed", "rolled_back") and not self.reason:
            raise ValueError(f"step {self.step!r} needs a reason")
        return self


class SmokeInput(Frozen):
    """A registered `.npz` (arrays keyed by model input name) run once before switching slots.

    Fetched like the model, through `registry.download_url` by digest: devices hold no S3 keys.
    """

    digest: Digest
    size_bytes: int = Field(ge=1)


class DesiredState(Frozen):
    """The value of KV key `desired.<device_id>`: the model this device should run.

    Not an envelope: it is state, not a message. The KV entry's revision orders writes and is
    what the device echoes in `DeviceStatus.desired_revision`; `issued_at` is for humans.
    """

    schema_version: Literal[1] = 1
    device_id: DeviceId
    rollout_id: str | None = Field(default=None, pattern=TOKEN_PATTERN, description="null = set by hand")
    model: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    variant: str | None = Field(default=None, pattern=NAME_PATTERN, description="null = the base artifact")
    digest: Digest
    size_bytes: int = Field(ge=1)
    signature: str = Field(min_length=1, description="base64 ed25519 signature of the ASCII string 'sha256:<digest>'")
    smoke_input: SmokeInput | None = Field(
        default=None, description="null = one synthetic input built from the graph's input specs"
    )
    shadow: bool = Field(default=False, description="also run the previous model on live inputs and report agreement")
    traceparent: str | None = Field(default=None, pattern=TRACEPARENT_PATTERN, description="W3C trace context")
    issued_at: AwareDatetime


class LatencyHistogram(Frozen):
    """Request latencies in fixed buckets, so windows from many devices can simply be summed.

    `counts[i]` counts requests with latency in `(bounds_ms[i-1], bounds_ms[i]]`; `counts[0]` those
    at or under `bounds_ms[0]`; the last entry those over `bounds_ms[-1]`.
    """

    bounds_ms: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        min_length=1, max_length=MAX_HISTOGRAM_BOUNDS
    )
    counts: list[Annotated[int, Field(ge=0)]] = Field(max_length=MAX_HISTOGRAM_BOUNDS + 1)

    @model_validator(mode="after")
    def _shape(self) -> LatencyHistogram:
        if any(b >= a for b, a in zip(self.bounds_ms, self.bounds_ms[1:], strict=False)):
            raise ValueError("bounds_ms must be strictly increasing")
        want = len(self.bounds_ms) + 1
        if len(self.counts) != want:
            raise ValueError(
                f"counts must have len(bounds_ms) + 1 = {want} entries (the last counts requests over "
                f"the last bound), got {len(self.counts)}"
            )
        return self


class ShadowAgreement(Frozen):
    """How often the new model agreed with the previous one on the same live inputs."""

    previous_digest: Digest
    compared: int = Field(ge=1, description="requests run on both models in this window")
    agreement_rate: float = Field(ge=0, le=1)


@register_message
class TelemetryWindow(Message):
    """What one device observed about one model over one time window: aggregates only."""

    TYPE = "telemetry.window"

    device_id: DeviceId
    model_digest: Digest
    window_start: AwareDatetime
    window_end: AwareDatetime
    request_count: int = Field(ge=0)
    error_count: int = Field(ge=0)
    latency: LatencyHistogram = Field(description="every request of the window, errors included")
    output_stats: dict[StatName, FiniteFloat] = Field(
        default_factory=dict,
        max_length=MAX_OUTPUT_STATS,
        description="named statistics of outputs, e.g. norm_mean, norm_std, top1.3 (share)",
    )
    shadow: ShadowAgreement | None = None
    cpu_percent: float = Field(ge=0, le=100, description="system-wide CPU use over the window, 0-100")
    ram_mb: float = Field(ge=0, description="resident memory of the agent process in MiB, model included")

    @model_validator(mode="after")
    def _consistent_counts(self) -> TelemetryWindow:
        if self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        if self.error_count > self.request_count:
            raise ValueError(f"error_count ({self.error_count}) exceeds request_count ({self.request_count})")
        if sum(self.latency.counts) != self.request_count:
            raise ValueError(
                f"latency counts sum to {sum(self.latency.counts)}, not request_count ({self.request_count})"
            )
        if self.shadow and self.shadow.compared > self.request_count:
            raise ValueError(f"shadow.compared ({self.shadow.compared}) exceeds request_count ({self.request_count})")
        return self
