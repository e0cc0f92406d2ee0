"""Every NATS subject the platform uses, built in one place.

The rule is mechanical so other systems can derive it: a command of type `T` travels on
`slmops.cmd.T`, an event of type `T` on `slmops.evt.T`, a request to service `S` for operation `O`
on `slmops.rpc.S.O`, and input a service could not accept on `slmops.dlq.S`.
"""

from __future__ import annotations

import re

from shared.messages.envelope import Message

ROOT = "slmops"
CMD = f"{ROOT}.cmd"
EVT = f"{ROOT}.evt"
RPC = f"{ROOT}.rpc"
DLQ = f"{ROOT}.dlq"
DEVICE = f"{ROOT}.device"
TELEMETRY = f"{ROOT}.telemetry"
ROLLUP = f"{ROOT}.rollup"
STATE = f"{ROOT}.state"
# The telemetry service's own log of what it folded into its aggregates (shared/topology.py).
TELEMETRY_FOLDS = f"{STATE}.telemetry.folds"

_TOKEN = re.compile(r"[A-Za-z0-9_\-]+")
# An inbox as nats-py makes them (`_INBOX.<nuid>`, or `_INBOX.<role>.<name>.<nuid>` for an identity's
# own prefix): tokens of subject-safe characters, short enough to be a subject the server accepts.
_INBOX = re.compile(r"_INBOX(\.[A-Za-z0-9_\-]{1,64}){1,8}")
MAX_INBOX = 256

# The device protocol's subjects, as templates (the AsyncAPI document shows them so).
DEVICE_HELLO = DEVICE + ".{device_id}.hello"
DEVICE_STATUS = DEVICE + ".{device_id}.status"
DEVICE_TELEMETRY = TELEMETRY + ".{device_id}"
_DEVICE_TEMPLATES = {"device.hello": DEVICE_HELLO, "device.status": DEVICE_STATUS, "telemetry.window": DEVICE_TELEMETRY}


def command(msg: type[Message] | Message) -> str:
    """Subject of a command payload type, e.g. `slmops.cmd.model.register`."""
    return f"{CMD}.{msg.TYPE}"


def event(msg: type[Message] | Message) -> str:
    """Subject of an event payload type, e.g. `slmops.evt.model.registered`."""
    return f"{EVT}.{msg.TYPE}"


def followed(msg: type[Message]) -> str:
    """Where messages of a type travel outside the command stream, as a pattern a consumer filter
    must cover: the event subject, or for the device protocol's messages every device's (`*`)."""
    template = _DEVICE_TEMPLATES.get(msg.TYPE)
    return template.format(device_id="*") if template else event(msg)


def reported_on(msg: Message) -> str | None:
    """The subject a device-protocol message must travel on, given the device it names (None for
    any other message): the subject is the sender's identity, so the two must agree."""
    template = _DEVICE_TEMPLATES.get(msg.TYPE)
    device_id = getattr(msg, "device_id", None)
    if template is None or not isinstance(device_id, str):
        return None
    return template.format(device_id=device_id)


def rpc(service: str, operation: str) -> str:
    """Request/reply subject of a service operation, e.g. `slmops.rpc.registry.list`."""
    return f"{RPC}.{_token(service)}.{_token(operation)}"


def device_rpc(operation_subject: str, device_id: str) -> str:
    """Where a device calls an operation that answers per device, e.g.
    `slmops.rpc.registry.download_url.<device id>` (only that device may publish there)."""
    return f"{operation_subject}.{_token(device_id)}"


def health(service: str) -> str:
    """Where a service answers liveness pings (core NATS request/reply)."""
    return rpc(service, "health")


def dlq(service: str) -> str:
    """Where a service parks input it could not accept, with the reason in headers."""
    return f"{DLQ}.{_token(service)}"


def device_hello(device_id: str) -> str:
    return DEVICE_HELLO.format(device_id=_token(device_id))


def device_status(device_id: str) -> str:
    return DEVICE_STATUS.format(device_id=_token(device_id))


def telemetry(device_id: str) -> str:
    return DEVICE_TELEMETRY.format(device_id=_token(device_id))


def rollup(*, digest: str, device_class: str, rollout_id: str | None, wave: int | None) -> str:
    """Where a cohort's per-minute rollup travels: `slmops.rollup.<digest>.<class>.manual` for devices
    running a model assigned by hand, `slmops.rollup.<digest>.<class>.rollout.<id>.<wave>` for a
    rollout's, so a consumer filters by digest, class or rollout with wildcards."""
    head = f"{ROLLUP}.{_token(digest)}.{_token(device_class)}"
    if rollout_id is None or wave is None:
        return f"{head}.manual"
    return f"{head}.rollout.{_token(rollout_id)}.{int(wave)}"


def valid_inbox(value: str | None) -> str | None:
    """`value` if it is an inbox a reply may go to; None for anything else. A reply subject is the
    sender's to choose: answering one of 7 KB, with a wildcard, or naming a stream's subject would
    make the server close the connection, or publish there with the replier's permissions."""
    if value and len(value) <= MAX_INBOX and _INBOX.fullmatch(value):
        return value
    return None


def device_token(device_id: str) -> str:
    """A device id checked to be one subject token (and so one KV key)."""
    return _token(device_id)


def _token(value: str) -> str:
    """Refuse values that would change a subject's shape (dots, wildcards, spaces)."""
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"{value!r} cannot be a subject token: use letters, digits, '_' and '-'")
    return value
