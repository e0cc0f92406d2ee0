"""Streams, KV buckets and durable consumers: declared here once, created idempotently.

`ensure_topology` is safe to run from every process at start-up and from `slmops up`: it creates
what is missing and updates what differs, so a deployment converges to this file.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from shared import subjects

DAY = 24 * 3600.0

CMDS_STREAM = "SLMOPS_CMDS"
EVENTS_STREAM = "SLMOPS_EVENTS"
DEVICE_STREAM = "SLMOPS_DEVICE"
TELEMETRY_STREAM = "SLMOPS_TELEMETRY"
DLQ_STREAM = "SLMOPS_DLQ"

STREAMS: tuple[StreamConfig, ...] = (
    StreamConfig(
        name=CMDS_STREAM,
        subjects=[f"{subjects.CMD}.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        max_age=7 * DAY,
        duplicate_window=120.0,
        description="Commands from users, the CLI and other systems; each consumed once.",
    ),
    StreamConfig(
        name=EVENTS_STREAM,
        subjects=[f"{subjects.EVT}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=365 * DAY,
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
        duplicate_window=120.0,
        description="Device hello and install-status reports.",
    ),
    StreamConfig(
        name=TELEMETRY_STREAM,
        subjects=[f"{subjects.TELEMETRY}.*"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=2 * DAY,
        max_bytes=2 * 1024**3,
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
        duplicate_window=120.0,
        description="Input a service could not accept: original bytes, reason in headers.",
    ),
)

KV_MODELS = "models"
KV_ROLLOUTS = "rollouts"
KV_DEVICES = "devices"
KV_DESIRED = "desired"

KV_BUCKETS: tuple[KeyValueConfig, ...] = (
    KeyValueConfig(bucket=KV_MODELS, history=5, description="Registry: versions, variants, aliases."),
    KeyValueConfig(bucket=KV_ROLLOUTS, history=10, description="Rollout state, updated by revision CAS."),
    KeyValueConfig(bucket=KV_DEVICES, history=1, description="Device inventory."),
    KeyValueConfig(bucket=KV_DESIRED, history=5, description="Per-device desired model."),
)


@dataclass(frozen=True, kw_only=True)
class DurableConsumer:
    """A shared durable pull consumer: every replica of a service binds to the same one."""

    stream: str
    durable: str
    filter_subject: str


REGISTRY_COMMANDS = DurableConsumer(
    stream=CMDS_STREAM, durable="registry-commands", filter_subject=f"{subjects.CMD}.model.>"
)
OPTIMIZER_COMMANDS = DurableConsumer(
    stream=CMDS_STREAM, durable="optimizer-commands", filter_subject=f"{subjects.CMD}.optimize.>"
)
# Only used when SLMOPS_OPTIMIZER_AUTO_PROFILES is set: turns model.registered into optimize commands.
OPTIMIZER_AUTO = DurableConsumer(
    stream=EVENTS_STREAM, durable="optimizer-auto", filter_subject=f"{subjects.EVT}.model.registered"
)


async def ensure_topology(js: JetStreamContext) -> None:
    """Create or update every stream and KV bucket declared above."""
    for cfg in STREAMS:
        await _ensure_stream(js, cfg)
    for kv in KV_BUCKETS:
        try:
            await js.key_value(kv.bucket)
        except (NotFoundError, BadRequestError):
            await js.create_key_value(kv)


async def _ensure_stream(js: JetStreamContext, cfg: StreamConfig) -> None:
    try:
        await js.stream_info(cfg.name or "")
    except NotFoundError:
        await js.add_stream(cfg)
        return
    await js.update_stream(cfg)
