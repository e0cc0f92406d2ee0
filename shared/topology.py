"""Streams, KV buckets and durable consumers: declared here once, created idempotently.

`ensure_topology` is safe to run from every process at start-up and from `slmops up`: it creates
what is missing and updates what differs, so a deployment converges to this file. Durable consumers
are created by the service that reads them (`ensure_consumer`, from the service kit), since their
redelivery settings are that deployment's.

Every stream and bucket is bounded, so that no sender, however hostile or broken, can fill the
server's disk or hand a consumer more than it can hold (`max_bytes` is also reserved against the
server's JetStream storage, so the sum below, about 5.4 GiB, must fit it; compose allows 10 GB):

    stream / bucket    max_msg_size / max_value_size   max_bytes   when full
    SLMOPS_CMDS        264 KiB (envelope + headers)    256 MiB     refuse new: the sender is told
    SLMOPS_EVENTS      264 KiB                         1 GiB       drop oldest (history, also 365 d)
    SLMOPS_DEVICE      64 KiB (a hello or a status)    256 MiB     drop oldest
    SLMOPS_TELEMETRY   64 KiB (one window)             2 GiB       drop oldest
    SLMOPS_DLQ         272 KiB (any of the above +     256 MiB     drop oldest (also 30 d)
                       provenance headers)
    SLMOPS_TELEMETRY_  264 KiB (one fold record)       256 MiB     drop oldest (also 1 d): the
      FOLDS                                                        telemetry service's aggregates
                                                                   are snapshotted in KV well before
    SLMOPS_ROLLUPS     64 KiB (one cohort-minute)      256 MiB     drop oldest (also 30 d)
    KV models          512 KiB (a command's data +     256 MiB     refuse new (KV's policy)
                       what the registry adds)
    KV rollouts        512 KiB                         128 MiB     refuse new
    KV devices         64 KiB (a hello's worth)        256 MiB     refuse new
    KV desired         20 KiB (one DesiredState, its   256 MiB     refuse new (10,000 devices x 5)
                       config at most 16 KiB)
    KV telemetry       512 KiB (one cohort-bucket)     256 MiB     refuse new
    KV blueprints      512 KiB (one blueprint, or one  64 MiB      refuse new
                       controller status)

The per-message sizes follow from `shared.messages.envelope.MAX_ENVELOPE_BYTES` (256 KiB, which
`decode` and `encode` enforce) and `MAX_HEADER_BYTES` (8 KiB); a publish over a stream's
`max_msg_size` is refused by the server with an error to its publisher, never stored. A DLQ entry
is cut to fit (`shared.dlq`). The server's `max_payload` (1 MiB by default) must be at least
`MESSAGE_MAX_BYTES`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, cast

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from shared import subjects
from shared.errors import SlmopsError
from shared.messages.common import MAX_CONFIG_BYTES
from shared.messages.envelope import MAX_ENVELOPE_BYTES, MAX_HEADER_BYTES

DAY = 24 * 3600.0
KiB, MiB, GiB = 1024, 1024**2, 1024**3
# One message of the command and event streams: an envelope and its headers.
MESSAGE_MAX_BYTES = MAX_ENVELOPE_BYTES + MAX_HEADER_BYTES
# A device's hello, status or telemetry window: small by contract (its lists and maps are capped).
DEVICE_MESSAGE_MAX_BYTES = 64 * KiB
# A DLQ entry: the largest body any stream delivers, plus the DLQ's provenance headers.
DLQ_MAX_MSG_SIZE = MESSAGE_MAX_BYTES + MAX_HEADER_BYTES
# A record the registry writes holds a command's data (at most MAX_ENVELOPE_BYTES) and what the
# registry adds to it (digests, signature, times): twice the envelope is room to spare.
RECORD_MAX_BYTES = 2 * MAX_ENVELOPE_BYTES
# One desired state: its `config` (at most MAX_CONFIG_BYTES) and the rest, under 1 KiB with every
# field at its longest (tests/unit/shared/test_topology.py builds that one): 4 KiB is room to spare.
DESIRED_MAX_BYTES = MAX_CONFIG_BYTES + 4 * KiB

CMDS_STREAM = "SLMOPS_CMDS"
EVENTS_STREAM = "SLMOPS_EVENTS"
DEVICE_STREAM = "SLMOPS_DEVICE"
TELEMETRY_STREAM = "SLMOPS_TELEMETRY"
DLQ_STREAM = "SLMOPS_DLQ"
TELEMETRY_FOLDS_STREAM = "SLMOPS_TELEMETRY_FOLDS"
ROLLUPS_STREAM = "SLMOPS_ROLLUPS"

STREAMS: tuple[StreamConfig, ...] = (
    StreamConfig(
        name=CMDS_STREAM,
        subjects=[f"{subjects.CMD}.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        max_age=7 * DAY,
        max_bytes=256 * MiB,
        max_msg_size=MESSAGE_MAX_BYTES,
        # Full: a new command is refused (its sender gets the error) rather than an old one lost.
        discard=DiscardPolicy.NEW,
        duplicate_window=120.0,
        description="Commands from users, the CLI and other systems; each consumed once.",
    ),
    StreamConfig(
        name=EVENTS_STREAM,
        subjects=[f"{subjects.EVT}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=365 * DAY,
        max_bytes=1 * GiB,
        max_msg_size=MESSAGE_MAX_BYTES,
        discard=DiscardPolicy.OLD,
        duplicate_window=600.0,
        description="Facts the services established; the platform's history.",
    ),
    StreamConfig(
        name=DEVICE_STREAM,
        subjects=[f"{subjects.DEVICE}.*.hello", f"{subjects.DEVICE}.*.status"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=7 * DAY,
        max_msgs_per_subject=1000,
        max_bytes=256 * MiB,
        max_msg_size=DEVICE_MESSAGE_MAX_BYTES,
        discard=DiscardPolicy.OLD,
        duplicate_window=120.0,
        description="Device hello and install-status reports.",
    ),
    StreamConfig(
        name=TELEMETRY_STREAM,
        subjects=[f"{subjects.TELEMETRY}.*"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=2 * DAY,
        max_bytes=2 * GiB,
        max_msg_size=DEVICE_MESSAGE_MAX_BYTES,
        discard=DiscardPolicy.OLD,
        duplicate_window=60.0,
        description="Device telemetry windows (aggregates only).",
    ),
    StreamConfig(
        name=DLQ_STREAM,
        subjects=[f"{subjects.DLQ}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=30 * DAY,
        max_bytes=256 * MiB,
        max_msg_size=DLQ_MAX_MSG_SIZE,
        discard=DiscardPolicy.OLD,
        duplicate_window=120.0,
        description="Input a service could not accept: original bytes, reason in headers.",
    ),
    StreamConfig(
        name=TELEMETRY_FOLDS_STREAM,
        subjects=[subjects.TELEMETRY_FOLDS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=1 * DAY,
        max_bytes=256 * MiB,
        max_msg_size=MESSAGE_MAX_BYTES,
        discard=DiscardPolicy.OLD,
        duplicate_window=120.0,
        description=(
            "The telemetry service's fold log: which telemetry windows (by stream sequence) entered its "
            "aggregates, and what they added. Written with an expected last sequence, so replicas agree."
        ),
    ),
    StreamConfig(
        name=ROLLUPS_STREAM,
        subjects=[f"{subjects.ROLLUP}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=30 * DAY,
        max_bytes=256 * MiB,
        max_msg_size=DEVICE_MESSAGE_MAX_BYTES,
        discard=DiscardPolicy.OLD,
        duplicate_window=600.0,
        description="Per-cohort, per-minute telemetry rollups, for dashboards and other systems.",
    ),
)

KV_MODELS = "models"
KV_ROLLOUTS = "rollouts"
KV_DEVICES = "devices"
KV_DESIRED = "desired"
KV_TELEMETRY = "telemetry"
KV_BLUEPRINTS = "blueprints"

KV_BUCKETS: tuple[KeyValueConfig, ...] = (
    KeyValueConfig(
        bucket=KV_MODELS,
        direct=True,
        history=5,
        max_value_size=RECORD_MAX_BYTES,
        max_bytes=256 * MiB,
        description="Registry: versions, variants, aliases.",
    ),
    KeyValueConfig(
        bucket=KV_ROLLOUTS,
        direct=True,
        history=10,
        max_value_size=RECORD_MAX_BYTES,
        max_bytes=128 * MiB,
        description="Rollout state, updated by revision CAS.",
    ),
    KeyValueConfig(
        bucket=KV_DEVICES,
        direct=True,
        history=1,
        max_value_size=DEVICE_MESSAGE_MAX_BYTES,
        max_bytes=256 * MiB,
        description="Device inventory.",
    ),
    KeyValueConfig(
        bucket=KV_DESIRED,
        direct=True,
        history=5,
        max_value_size=DESIRED_MAX_BYTES,
        max_bytes=256 * MiB,
        description="Per-device desired model.",
    ),
    KeyValueConfig(
        bucket=KV_TELEMETRY,
        direct=True,
        history=1,
        max_value_size=RECORD_MAX_BYTES,
        max_bytes=256 * MiB,
        description="Telemetry aggregates per cohort and time bucket, each with the fold position it reflects.",
    ),
    KeyValueConfig(
        bucket=KV_BLUEPRINTS,
        direct=True,
        history=10,
        max_value_size=RECORD_MAX_BYTES,
        max_bytes=64 * MiB,
        description="Blueprints as applied (spec.<name>) and what the controller did about each (status.<name>).",
    ),
)


@dataclass(frozen=True, kw_only=True)
class DurableConsumer:
    """A shared durable pull consumer, configured here and nowhere else.

    Every replica of a service binds to the same durable, so the server splits the work between
    them. The service kit creates the consumer from this declaration at start-up, refuses to bind
    to an existing one that contradicts it (another filter, deliver or ack policy), and fetches in
    batches of `batch_size`.

    Attributes:
        ack_wait_seconds, max_deliver: defaults; a deployment tunes them with `SLMOPS_ACK_WAIT_SECONDS`
            and `SLMOPS_MAX_DELIVER` (`tuned`). `max_deliver` is the attempts a handler makes: the
            server allows one delivery more (`server_max_deliver`), so a message whose last attempt
            died with its process is still delivered once more, and dead-lettered, instead of lying
            unacknowledged in the stream for good.
    """

    stream: str
    durable: str
    filter_subject: str
    description: str
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL
    ack_wait_seconds: float = 30.0
    max_deliver: int = 5
    max_ack_pending: int = 1000
    batch_size: int = 1
    fetch_timeout_seconds: float = 5.0

    @property
    def server_max_deliver(self) -> int:
        return self.max_deliver + 1

    def tuned(self, *, ack_wait_seconds: float, max_deliver: int) -> DurableConsumer:
        """This consumer with a deployment's redelivery settings."""
        return replace(self, ack_wait_seconds=ack_wait_seconds, max_deliver=max_deliver)

    def consumer_config(self) -> ConsumerConfig:
        """The server-side configuration (explicit acks: the handler settles every message)."""
        return ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            description=self.description,
            filter_subject=self.filter_subject,
            deliver_policy=self.deliver_policy,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_seconds,
            max_deliver=self.server_max_deliver,
            max_ack_pending=self.max_ack_pending,
        )

    def covers(self, subject: str) -> bool:
        """True if a message published on `subject` reaches this consumer."""
        return subject_matches(self.filter_subject, subject)


class TopologyConflict(SlmopsError):
    """The server holds a consumer whose configuration contradicts its declaration here."""


REGISTRY_COMMANDS = DurableConsumer(
    stream=CMDS_STREAM,
    durable="registry-commands",
    filter_subject=f"{subjects.CMD}.model.>",
    description="The registry's commands: register models and variants, set aliases.",
)
OPTIMIZER_COMMANDS = DurableConsumer(
    stream=CMDS_STREAM,
    durable="optimizer-commands",
    filter_subject=f"{subjects.CMD}.optimize.>",
    description="The optimizer's commands: optimization requests.",
)
# Followed only when SLMOPS_OPTIMIZER_AUTO_PROFILES is set: turns model.registered into optimize commands.
OPTIMIZER_AUTO = DurableConsumer(
    stream=EVENTS_STREAM,
    durable="optimizer-auto",
    filter_subject=f"{subjects.EVT}.model.registered",
    description="Newly registered models, for the optimizer's auto-optimization profiles.",
    deliver_policy=DeliverPolicy.NEW,
    batch_size=10,
)
# Fleet rate (150,000 devices every 10 s is 15,000 windows a second): batches of 500 (shared/kit/batch.py),
# two batches in flight while one is folded.
TELEMETRY_WINDOWS = DurableConsumer(
    stream=TELEMETRY_STREAM,
    durable="telemetry-windows",
    filter_subject=f"{subjects.TELEMETRY}.>",
    description="Every device telemetry window, validated and folded into the cohort aggregates.",
    batch_size=500,
    max_ack_pending=5000,
)
# The optimizer's outcomes, for the blueprints controller: a build it asked for that failed lets the
# blueprint's rollout go ahead without that variant (progress and completions are acked unread).
BLUEPRINTS_OPTIMIZATIONS = DurableConsumer(
    stream=EVENTS_STREAM,
    durable="blueprints-optimizations",
    filter_subject=f"{subjects.EVT}.optimization.>",
    description="Optimization outcomes, for the blueprint controller's builds.",
    deliver_policy=DeliverPolicy.NEW,
    batch_size=10,
)
ROLLOUT_COMMANDS = DurableConsumer(
    stream=CMDS_STREAM,
    durable="rollout-commands",
    filter_subject=f"{subjects.CMD}.rollout.>",
    description="The rollout service's commands: start, pause, resume, abort, roll back.",
)
# The inventory: every hello (also the heartbeat) and status, folded into KV devices a batch at a
# time (150,000 devices with a 30 s heartbeat are 5,000 hellos a second). The rollout service is
# also the reports' validator: a device whose message is invalid finds the reason in
# slmops.dlq.rollout (docs/DEVICE_PROTOCOL.md).
ROLLOUT_DEVICE_REPORTS = DurableConsumer(
    stream=DEVICE_STREAM,
    durable="rollout-device",
    filter_subject=f"{subjects.DEVICE}.>",
    description="Every device hello and install status, validated and folded into the inventory (KV devices).",
    batch_size=500,
    max_ack_pending=5000,
)
DURABLE_CONSUMERS: tuple[DurableConsumer, ...] = (
    REGISTRY_COMMANDS,
    OPTIMIZER_COMMANDS,
    OPTIMIZER_AUTO,
    TELEMETRY_WINDOWS,
    ROLLOUT_COMMANDS,
    ROLLOUT_DEVICE_REPORTS,
    BLUEPRINTS_OPTIMIZATIONS,
)

# Fields a running consumer may not change under its users: a different filter would silently move
# another service's messages, a different deliver or ack policy would change what "handled" means.
_FIXED_FIELDS = ("filter_subject", "deliver_policy", "ack_policy")


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, a final `>` is one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


async def ensure_consumer(js: JetStreamContext, consumer: DurableConsumer) -> None:
    """Create `consumer` on the server, or bring an existing one's tunables in line with it.

    Raises:
        TopologyConflict: the existing consumer has another filter, deliver or ack policy; the
            message names each field, both values, and how to resolve it.
    """
    declared = consumer.consumer_config()
    try:
        info = await js.consumer_info(consumer.stream, consumer.durable)
    except NotFoundError:
        await js.add_consumer(consumer.stream, declared)
        return
    existing = info.config
    clashes = [
        f"{name} is {getattr(existing, name)!s} on the server but {getattr(declared, name)!s} in shared/topology.py"
        for name in _FIXED_FIELDS
        if _plain(getattr(existing, name)) != _plain(getattr(declared, name))
    ]
    if clashes:
        raise TopologyConflict(
            f"durable consumer {consumer.durable!r} on stream {consumer.stream}: {'; '.join(clashes)}. "
            f"Delete it once its messages are handled (`nats consumer rm {consumer.stream} {consumer.durable}`) "
            "or fix the declaration"
        )
    tunables = ("ack_wait", "max_deliver", "max_ack_pending", "description")
    if any(getattr(existing, name) != getattr(declared, name) for name in tunables):
        await js.add_consumer(consumer.stream, declared)


def _plain(value: object) -> object:
    """Enum members and their string values compare equal (nats-py returns either)."""
    return getattr(value, "value", value)


# The stream fields declared above. An existing stream is updated with the server's own
# configuration and only these replaced, so what an operator set that is not declared here
# (replicas, placement, compression, ...) survives every start-up; and nothing is sent at all when
# nothing differs.
_STREAM_FIELDS = (
    "description",
    "subjects",
    "retention",
    "storage",
    "max_age",
    "max_bytes",
    "max_msg_size",
    "max_msgs_per_subject",
    "discard",
    "duplicate_window",
)
# A KV bucket's declared fields, and the field of its stream (`KV_<bucket>`) each one is.
_BUCKET_FIELDS = {
    "description": "description",
    "max_value_size": "max_msg_size",
    "max_bytes": "max_bytes",
    "history": "max_msgs_per_subject",
    "direct": "allow_direct",
}


async def ensure_topology(js: JetStreamContext) -> None:
    """Create every stream and KV bucket declared above, or bring an existing one in line with it.

    Raises:
        TopologyConflict: the server refuses a change (a retention or storage that cannot change
            in place); the message names the stream, the fields and the server's reason.
    """
    for cfg in STREAMS:
        await _ensure_stream(js, cfg)
    for kv in KV_BUCKETS:
        await _ensure_bucket(js, kv)


async def _ensure_stream(js: JetStreamContext, cfg: StreamConfig) -> None:
    try:
        info = await js.stream_info(cfg.name or "")
    except NotFoundError:
        await js.add_stream(cfg)
        return
    await _converge(js, info.config, {name: getattr(cfg, name) for name in _STREAM_FIELDS})


async def _ensure_bucket(js: JetStreamContext, kv: KeyValueConfig) -> None:
    try:
        info = await js.stream_info(f"KV_{kv.bucket}")
    except NotFoundError:
        await js.create_key_value(kv)
        return
    await _converge(js, info.config, {field: getattr(kv, name) for name, field in _BUCKET_FIELDS.items()})


def stream_changes(existing: StreamConfig, declared: dict[str, object]) -> dict[str, object]:
    """The declared fields (those set) whose value on the server differs."""
    return {
        name: value
        for name, value in declared.items()
        if value is not None and _plain(getattr(existing, name)) != _plain(value)
    }


async def _converge(js: JetStreamContext, existing: StreamConfig, declared: dict[str, object]) -> None:
    changes = stream_changes(existing, declared)
    if not changes:
        return
    try:
        await js.update_stream(replace(existing, **cast(dict[str, Any], changes)))
    except BadRequestError as exc:
        raise TopologyConflict(
            f"stream {existing.name}: the server refuses to change {', '.join(sorted(changes))} "
            f"to the values in shared/topology.py: {exc.description or exc}"
        ) from None


class TopologyMissing(SlmopsError):
    """A stream or bucket a service needs does not exist: the platform was not initialised."""


async def verify_topology(js: JetStreamContext, streams: Iterable[str]) -> None:
    """Check that `streams` (KV buckets as `KV_<bucket>`) exist, without creating anything.

    Services only verify: creating and changing streams is the admin identity's (`slmops up`,
    `slmops stack init`), so a service's credentials never need to.

    Raises:
        TopologyMissing: naming what is missing and how to create it.
    """
    missing = []
    for name in dict.fromkeys(streams):
        try:
            await js.stream_info(name)
        except NotFoundError:
            missing.append(name)
    if missing:
        raise TopologyMissing(
            f"stream(s) {', '.join(missing)} do not exist: initialise the platform first "
            "(`slmops stack init`, which `slmops up` runs)"
        )
