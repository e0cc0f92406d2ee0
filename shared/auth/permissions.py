"""What each identity may publish and subscribe: pure functions of the role and its name.

Least privilege is by allow-list: a subject not listed is refused by the server. The rules, and
why each one is needed, are the tables in docs/SECURITY.md; tests/integration/test_permissions.py
connects as each identity and shows each refusal.

* A **device** speaks only for itself: its own hello, status and telemetry subjects, its own
  download-URL request (`slmops.rpc.registry.download_url.<id>`, so the registry knows who asks),
  a direct get of its own `desired` key and a subscription to that key's updates. No other
  JetStream API, no acks, no commands, no other device's subjects.
* A **service** gets what its kit declarations name (`ServiceAccess`): its durable consumers,
  the events and commands it publishes, its RPCs, the RPCs it calls, the KV buckets it reads or
  writes, its DLQ subject. It never creates, changes or deletes streams or buckets: `admin` does.
* The **operator** (the CLI, other systems) sends commands, calls operations and reads state
  (stream and consumer info, KV gets, ephemeral consumers to read streams), and cannot delete or
  reconfigure streams, buckets or consumers, nor ack (and so remove) another consumer's messages.
* **admin** creates the topology (`slmops up`, `slmops stack init`) and is used by the tests'
  setup; **simulator** speaks for every simulated device of `slmops fleet simulate` (a test tool,
  never given to a real device).

Every identity's replies arrive under its own inbox prefix (`inbox_prefix`), so no identity can
read another's replies (download URLs are bearer secrets).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from shared import subjects, topology
from shared.auth import tokens

Role = Literal["device", "service", "operator", "admin", "simulator"]
ROLES: tuple[Role, ...] = ("device", "service", "operator", "admin", "simulator")
ROLE_TAG = "slmops-role:"

JS_API = "$JS.API"
DOWNLOAD_URL = subjects.rpc("registry", "download_url")


@dataclass(frozen=True)
class Permissions:
    """Subjects an identity may publish to and subscribe to (NATS wildcards), and whether it may
    answer requests (publish to the reply subject of a request it received)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    responses: bool = False
    publish_deny: tuple[str, ...] = ()

    def claims(self) -> dict[str, object]:
        """The `pub`/`sub`/`resp` part of a user JWT's `nats` claim."""
        pub: dict[str, list[str]] = {"allow": list(self.publish)}
        if self.publish_deny:
            pub["deny"] = list(self.publish_deny)
        out: dict[str, object] = {"pub": pub, "sub": {"allow": list(self.subscribe)}}
        if self.responses:
            out["resp"] = {"max": 1, "ttl": 0}
        return out


@dataclass(frozen=True)
class ConsumerAccess:
    stream: str
    durable: str


@dataclass(frozen=True)
class ServiceAccess:
    """What a service touches on the bus, as its kit declarations say (`ServiceKit.access()`)."""

    name: str
    consumers: tuple[ConsumerAccess, ...] = ()
    answers: tuple[str, ...] = ()
    answers_per_device: tuple[str, ...] = ()
    publishes: tuple[str, ...] = ()
    calls: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    extra: tuple[str, ...] = field(default=())


def inbox_prefix(role: Role, name: str) -> str:
    """Where an identity's replies arrive: `_INBOX.<role>.<name>` (the client sets it from its
    credentials, `shared.bus.connect`)."""
    return f"_INBOX.{role}.{name}"


def credentials_inbox(creds_text: str) -> str | None:
    """The inbox prefix of the identity a `.creds` file holds (None: not one of ours)."""
    claims = tokens.decode_claims(tokens.read_credentials_jwt(creds_text))
    tags = [t for t in claims["nats"].get("tags") or [] if t.startswith(ROLE_TAG)]
    role = tags[0].removeprefix(ROLE_TAG) if tags else None
    for known in ROLES:
        if role == known:
            return inbox_prefix(known, claims["name"])
    return None


def for_device(device_id: str) -> Permissions:
    kv = _kv_subject(topology.KV_DESIRED, device_id)
    return Permissions(
        publish=(
            subjects.device_hello(device_id),
            subjects.device_status(device_id),
            subjects.telemetry(device_id),
            f"{DOWNLOAD_URL}.{device_id}",
            f"{JS_API}.DIRECT.GET.KV_{topology.KV_DESIRED}.{kv}",
        ),
        subscribe=(f"{inbox_prefix('device', device_id)}.>", kv),
    )


def for_simulator(name: str) -> Permissions:
    """Every device's subjects, and a watch on the whole `desired` bucket (one per process)."""
    stream = f"KV_{topology.KV_DESIRED}"
    return Permissions(
        publish=(
            subjects.DEVICE_HELLO.format(device_id="*"),
            subjects.DEVICE_STATUS.format(device_id="*"),
            subjects.DEVICE_TELEMETRY.format(device_id="*"),
            f"{DOWNLOAD_URL}.*",
            f"{JS_API}.DIRECT.GET.{stream}.>",
            *_read_bucket(topology.KV_DESIRED),
        ),
        subscribe=(f"{inbox_prefix('simulator', name)}.>", _kv_subject(topology.KV_DESIRED, "*")),
    )


def for_operator(name: str) -> Permissions:
    return Permissions(
        publish=(
            f"{subjects.CMD}.>",
            f"{subjects.RPC}.*.*",
            f"{JS_API}.INFO",
            f"{JS_API}.STREAM.NAMES",
            f"{JS_API}.STREAM.LIST",
            f"{JS_API}.STREAM.INFO.*",
            f"{JS_API}.STREAM.MSG.GET.*",
            f"{JS_API}.DIRECT.GET.>",
            f"{JS_API}.CONSUMER.NAMES.*",
            f"{JS_API}.CONSUMER.LIST.*",
            f"{JS_API}.CONSUMER.INFO.*.*",
            # Ephemeral consumers only (the bare subject: the server refuses a durable name there),
            # to read streams and list KV keys; flow control for those ordered consumers.
            f"{JS_API}.CONSUMER.CREATE.*",
            "$JS.FC.>",
        ),
        # Reading state includes watching it live: events, dead letters and device reports.
        subscribe=(
            f"{inbox_prefix('operator', name)}.>",
            f"{subjects.EVT}.>",
            f"{subjects.DLQ}.>",
            f"{subjects.DEVICE}.>",
            f"{subjects.TELEMETRY}.>",
        ),
    )


def for_admin(name: str) -> Permissions:
    return Permissions(publish=(">",), subscribe=(">",), responses=True)


def for_service(access: ServiceAccess) -> Permissions:
    name = access.name
    publish: list[str] = [
        f"{JS_API}.INFO",
        subjects.dlq(name),
        "_INBOX.>",  # command outcomes go to the inbox the sender named (Slmops-Reply-To)
        *access.publishes,
        *access.calls,
        *access.extra,
    ]
    for consumer in access.consumers:
        publish += _consume(consumer.stream, consumer.durable)
    for bucket in sorted(set(access.reads) | set(access.writes)):
        publish += _read_bucket(bucket)
    for bucket in access.writes:
        publish.append(f"$KV.{bucket}.>")
    subscribe = [f"{inbox_prefix('service', name)}.>", f"{subjects.RPC}.{name}.>"]
    return Permissions(publish=tuple(dict.fromkeys(publish)), subscribe=tuple(subscribe), responses=True)


def _consume(stream: str, durable: str) -> list[str]:
    return [
        f"{JS_API}.STREAM.INFO.{stream}",
        f"{JS_API}.CONSUMER.INFO.{stream}.{durable}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}.>",
        f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def _read_bucket(bucket: str) -> list[str]:
    stream = f"KV_{bucket}"
    return [
        f"{JS_API}.STREAM.INFO.{stream}",
        f"{JS_API}.STREAM.MSG.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}.>",
        # Listing keys and watching use an ephemeral ordered consumer.
        f"{JS_API}.CONSUMER.CREATE.{stream}",
        f"{JS_API}.CONSUMER.INFO.{stream}.*",
        "$JS.FC.>",
    ]


def _kv_subject(bucket: str, key: str) -> str:
    return f"$KV.{bucket}.{key}"


def for_role(role: Role, name: str) -> Permissions:
    """Permissions of a non-service role (a service's depend on its declarations: `for_service`)."""
    if role == "device":
        return for_device(name)
    if role == "simulator":
        return for_simulator(name)
    if role == "operator":
        return for_operator(name)
    if role == "admin":
        return for_admin(name)
    raise ValueError(f"a {role} identity's permissions come from its declarations (for_service)")
