"""The device inventory as pure functions: a record folded from a device's hellos and statuses, and
whether it is online at a given moment.

Reports arrive at least once and not always in order (a status may overtake the hello before it,
a redelivery may repeat an old one), so folding is by report time, not by arrival: capabilities
come from the newest hello, the last status from the newest status, what serves from the newest
report that names it; so any order and any repeats of the same reports give the same record.
A status from a device that never said hello makes no record (there are no capabilities to record);
the caller counts it and waits for the hello, which the device repeats as its heartbeat.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.messages.device import DeviceHello, DeviceStatus, InstallStep
from shared.messages.inventory import DeviceRecord, LastStatus

# A device is offline once it has missed this many heartbeats in a row (the agent's default period
# is 30 s, `SLMOPS_AGENT_HEARTBEAT_SECONDS`): one lost hello is not an outage.
MISSED_HEARTBEATS = 3
# How stale `last_seen` may be in the stored record: a heartbeat that only moves it by less is not
# written (10,000 devices heartbeating every 30 s would otherwise be 333 writes a second). Below two
# heartbeat periods, so a device that keeps its heartbeat is never judged offline (is_online).
LAST_SEEN_RESOLUTION = timedelta(seconds=45)
# The steps a rollout acts on. The ones before them (received ... smoke_testing) are not written:
# a rollout decides nothing on them, and an install is then one write, not eight (the device's
# own `slmops device status` and the status stream still show every step).
SETTLED_STEPS: frozenset[InstallStep] = frozenset({"active", "failed", "rolled_back"})


def with_hello(record: DeviceRecord | None, hello: DeviceHello, *, at: datetime) -> DeviceRecord:
    """The record after a hello sent at `at` (the envelope's time)."""
    if record is not None and at < record.hello_at:
        return record.model_copy(update={"first_seen": min(record.first_seen, at)})
    names_newest = record is None or at >= record.active_at
    return DeviceRecord(
        device_id=hello.device_id,
        device_class=hello.device_class,
        arch=hello.arch,
        ram_mb=hello.ram_mb,
        cpu_count=hello.cpu_count,
        accelerators=hello.accelerators,
        onnxruntime_version=hello.onnxruntime_version,
        execution_providers=hello.execution_providers,
        labels=hello.labels,
        agent_version=hello.agent_version,
        # What serves: the newest report's word (a status after this hello has the newer one).
        active_digest=hello.active_digest if names_newest or record is None else record.active_digest,
        active_config_digest=hello.config_digest if names_newest or record is None else record.active_config_digest,
        active_at=at if names_newest or record is None else record.active_at,
        first_seen=min(record.first_seen, at) if record is not None else at,
        hello_at=at,
        last_seen=max(record.last_seen, at) if record is not None else at,
        last_status=record.last_status if record is not None else None,
    )


def with_status(record: DeviceRecord | None, status: DeviceStatus, *, at: datetime) -> DeviceRecord | None:
    """The record after a status sent at `at`; None when the device has no record yet (no hello)."""
    if record is None:
        return None
    update: dict[str, object] = {"last_seen": max(record.last_seen, at)}
    if record.last_status is None or at >= record.last_status.at:  # else a late or repeated delivery
        update["last_status"] = LastStatus(
            desired_revision=status.desired_revision,
            digest=status.digest,
            step=status.step,
            active_digest=status.active_digest,
            config_digest=status.config_digest,
            reason=status.reason,
            at=at,
        )
    if status.active_digest is not None and at >= record.active_at:
        update |= {"active_digest": status.active_digest, "active_config_digest": status.config_digest, "active_at": at}
    return record.model_copy(update=update)


def worth_writing(current: DeviceRecord | None, folded: DeviceRecord) -> bool:
    """Whether `folded` says something `current` (the stored record) does not, that a reader needs:
    new capabilities, labels or serving digest, an install's outcome, or a last-seen time that
    moved by `LAST_SEEN_RESOLUTION` or more. The rest is dropped, not deferred:
    a later report carries it again, so the stored times may lag by up to that much (and a late
    report older than a dropped one is then judged against the stored, older time)."""
    if current is None:
        return True
    if folded == current:
        return False
    new, old = folded.last_status, current.last_status
    if new != old and new is not None and new.step in SETTLED_STEPS:
        return True
    times = {"last_seen", "hello_at", "active_at", "last_status"}  # when, not what
    if folded.model_dump(exclude=times) != current.model_dump(exclude=times):
        return True
    return folded.last_seen - current.last_seen >= LAST_SEEN_RESOLUTION


def is_online(record: DeviceRecord, *, now: datetime, heartbeat_seconds: float) -> bool:
    """Heard from within `MISSED_HEARTBEATS` heartbeat periods of `now`."""
    return now - record.last_seen <= timedelta(seconds=MISSED_HEARTBEATS * heartbeat_seconds)
