"""The device protocol: what a device says (hello, install status, telemetry) and what it is told.

A device may be our agent or any third-party program, so everything it sends is validated as
strictly as a command from another system. Device ids become NATS subject tokens
(`slmops.device.<id>.status`), hence the narrow id pattern. Telemetry carries aggregates only:
no model has a field for raw inputs or outputs, so none can leave a device through this contract.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, FiniteFloat, StringConstraints, model_validator

from shared.histogram import ExponentialHistogram
from shared.messages.common import MAX_CONFIG_BYTES, NAME_PATTERN, SHA256_HEX, VERSION_PATTERN, Config, Frozen
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
# A window's latency histogram (schema 2): OpenTelemetry's exponential histogram, at most this many
# buckets (its default), scales OTel allows, and bucket indexes for latencies between ~1 ns and ~30 years.
MAX_LATENCY_BUCKETS = 160
MIN_LATENCY_SCALE, MAX_LATENCY_SCALE = -10, 20
MAX_BUCKET_INDEX = 2**20
# Counts no window can honestly reach (a thousand requests a second for ten days): a bigger one is
# a broken sender, refused rather than allowed to dominate a fleet's aggregate.
MAX_WINDOW_REQUESTS = 10**9
# Cosine similarity of a served output to the device's reference centroid for the digest: fixed bins,
# so windows from every device add up and drift is a distance between two binned distributions.
# counts[i] counts similarities in (SIMILARITY_BOUNDS[i-1], SIMILARITY_BOUNDS[i]]; counts[0] those at
# or under the first bound, the last entry those over the last bound.
SIMILARITY_BOUNDS: tuple[float, ...] = (0.0, 0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995)

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
    config_digest: Digest | None = Field(
        default=None, description="sha256 of the settings served with that model (DesiredState.config); null = none"
    )


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
    config_digest: Digest | None = Field(
        default=None,
        description="sha256 of the settings served with that model after this step (canonical JSON of "
        "DesiredState.config); null = none",
    )
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
    wave: int | None = Field(default=None, ge=0, description="the rollout's wave that wrote it; null = set by hand")
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
    config: Config | None = Field(
        default=None,
        description=f"application settings served with the model to the device's own applications, at most "
        f"{MAX_CONFIG_BYTES} bytes as JSON; null = none",
    )
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
class TelemetryWindowV1(Message):
    """Schema 1 of a window, still accepted: latency in fixed buckets (too coarse to gate a 10 %
    regression on) and output statistics without their counts. Devices send `TelemetryWindow` (2)."""

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
    def _consistent_counts(self) -> TelemetryWindowV1:
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


WindowCount = Annotated[int, Field(ge=0, le=MAX_WINDOW_REQUESTS)]


class ExponentialLatency(Frozen):
    """Request latencies (ms) in OpenTelemetry's base-2 exponential buckets (`shared.histogram`).

    At `scale` the bucket boundaries are `base**i` with `base = 2 ** (2 ** -scale)`; `counts[j]` counts
    latencies in `(base**(offset+j), base**(offset+j+1)]`, `zero_count` those of 0 ms. Any quantile read
    from it is within `(base - 1) / (base + 1)` of the true one: 4.3 % at scale 3, 2.2 % at 4. Windows
    from many devices merge by adding counts, so a fleet's p95 is as good as one device's.
    """

    scale: int = Field(ge=MIN_LATENCY_SCALE, le=MAX_LATENCY_SCALE)
    zero_count: WindowCount = 0
    offset: int = Field(ge=-MAX_BUCKET_INDEX, le=MAX_BUCKET_INDEX, description="bucket index of counts[0]")
    counts: list[WindowCount] = Field(default_factory=list, max_length=MAX_LATENCY_BUCKETS)

    @classmethod
    def of(cls, histogram: ExponentialHistogram) -> ExponentialLatency:
        """The wire form of a histogram."""
        return cls(
            scale=histogram.scale, zero_count=histogram.zero_count, offset=histogram.offset, counts=histogram.counts
        )

    def histogram(self) -> ExponentialHistogram:
        """A histogram holding these counts, to merge or read quantiles from."""
        return ExponentialHistogram(
            scale=self.scale, zero_count=self.zero_count, offset=self.offset, counts=list(self.counts)
        )


class OutputMoments(Frozen):
    """The mean and (population) variance of one output statistic over `count` values, so windows
    merge with the right weights: a fleet's mean is the count-weighted mean, not a mean of means."""

    count: int = Field(ge=1, le=2**53)
    mean: FiniteFloat
    variance: float = Field(ge=0, allow_inf_nan=False)


class SimilarityHistogram(Frozen):
    """Cosine similarity of each served output to the device's reference centroid for this digest
    (the mean of its first `reference_requests` normalised outputs), in `SIMILARITY_BOUNDS` bins.

    Why: an embedding's norm does not move when inputs shift (it is normalised); its direction
    does. The centroid and every output stay on the device; only these counts leave it.
    """

    reference_requests: int = Field(ge=1, le=MAX_WINDOW_REQUESTS)
    counts: list[WindowCount] = Field(min_length=len(SIMILARITY_BOUNDS) + 1, max_length=len(SIMILARITY_BOUNDS) + 1)


@register_message
class TelemetryWindow(Message):
    """What one device observed about one model over one time window: aggregates only (schema 2).

    The device names its class and, when the model came from a rollout, the rollout and wave of its
    desired state, so the telemetry service can aggregate by cohort without a join.
    """

    TYPE = "telemetry.window"
    SCHEMA_VERSION = 2

    device_id: DeviceId
    device_class: str = Field(pattern=NAME_PATTERN, description="the class the device announced in its hello")
    model_digest: Digest
    rollout_id: str | None = Field(
        default=None, pattern=TOKEN_PATTERN, description="the rollout of the desired state it runs; null = by hand"
    )
    wave: int | None = Field(default=None, ge=0, description="that desired state's wave")
    window_start: AwareDatetime
    window_end: AwareDatetime
    request_count: WindowCount
    error_count: WindowCount
    latency: ExponentialLatency = Field(description="every request of the window, errors included")
    outputs: dict[StatName, OutputMoments] = Field(
        default_factory=dict,
        max_length=MAX_OUTPUT_STATS,
        description="named output statistics with their counts, e.g. norm (per request), value (per element)",
    )
    similarity: SimilarityHistogram | None = Field(default=None, description="embedding models: see the type")
    shadow: ShadowAgreement | None = None
    cpu_percent: float = Field(ge=0, le=100, description="system-wide CPU use over the window, 0-100")
    ram_mb: float = Field(ge=0, le=2**40, description="resident memory of the agent process in MiB, model included")

    @model_validator(mode="after")
    def _consistent_counts(self) -> TelemetryWindow:
        if self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        if (self.rollout_id is None) != (self.wave is None):
            raise ValueError("rollout_id and wave go together: both set (a rollout's model) or neither")
        if self.error_count > self.request_count:
            raise ValueError(f"error_count ({self.error_count}) exceeds request_count ({self.request_count})")
        latencies = self.latency.zero_count + sum(self.latency.counts)
        if latencies != self.request_count:
            raise ValueError(f"latency counts sum to {latencies}, not request_count ({self.request_count})")
        if self.shadow and self.shadow.compared > self.request_count:
            raise ValueError(f"shadow.compared ({self.shadow.compared}) exceeds request_count ({self.request_count})")
        served = self.request_count - self.error_count
        if self.similarity and sum(self.similarity.counts) > served:
            raise ValueError(
                f"similarity counts sum to {sum(self.similarity.counts)}, more than the {served} requests served"
            )
        return self
