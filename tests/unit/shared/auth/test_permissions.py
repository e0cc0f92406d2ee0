"""The permission rules as data: what each role's JWT will allow (the server's refusals are in
tests/integration/test_permissions.py)."""

from __future__ import annotations

from shared import topology
from shared.auth import permissions, tokens
from shared.auth.permissions import ConsumerAccess, ServiceAccess
from shared.topology import subject_matches


def allowed(patterns: tuple[str, ...], subject: str) -> bool:
    return any(subject_matches(p, subject) for p in patterns)


def test_a_device_may_publish_only_its_own_subjects() -> None:
    grants = permissions.for_device("dev-1")
    for own in ("slmops.device.dev-1.hello", "slmops.telemetry.dev-1", "slmops.rpc.registry.download_url.dev-1"):
        assert allowed(grants.publish, own), own
    for other in (
        "slmops.device.dev-2.hello",
        "slmops.rpc.registry.download_url",
        "slmops.cmd.model.register",
        "$JS.API.STREAM.NAMES",
        "$JS.ACK.SLMOPS_CMDS.registry-commands.1.1.1.1.0",
        "$KV.desired.dev-1",
    ):
        assert not allowed(grants.publish, other), other
    assert grants.subscribe == ("_INBOX.device.dev-1.>", "$KV.desired.dev-1")
    assert not grants.responses


def test_a_service_gets_what_its_declarations_name_and_no_topology_changes() -> None:
    access = ServiceAccess(
        name="registry",
        consumers=(ConsumerAccess(stream=topology.CMDS_STREAM, durable="registry-commands"),),
        publishes=("slmops.evt.model.registered",),
        calls=("slmops.rpc.optimizer.get",),
        reads=("desired",),
        writes=("models",),
    )
    grants = permissions.for_service(access)
    for subject in (
        "$JS.API.CONSUMER.MSG.NEXT.SLMOPS_CMDS.registry-commands",
        "$JS.ACK.SLMOPS_CMDS.registry-commands.1.2.3.4.5",
        "slmops.evt.model.registered",
        "slmops.rpc.optimizer.get",
        "slmops.dlq.registry",
        "$KV.models.version.m.1",
        "$JS.API.DIRECT.GET.KV_desired.$KV.desired.dev-1",
    ):
        assert allowed(grants.publish, subject), subject
    for subject in (
        "$JS.API.CONSUMER.MSG.NEXT.SLMOPS_CMDS.optimizer-commands",
        "$JS.API.STREAM.CREATE.SLMOPS_EVENTS",
        "$JS.API.STREAM.DELETE.KV_models",
        "$KV.desired.dev-1",
        "slmops.evt.optimization.completed",
    ):
        assert not allowed(grants.publish, subject), subject
    assert grants.responses and allowed(grants.subscribe, "slmops.rpc.registry.get")


def test_the_operator_reads_but_never_reconfigures() -> None:
    grants = permissions.for_operator("cli")
    assert allowed(grants.publish, "slmops.cmd.model.register") and allowed(grants.publish, "slmops.rpc.registry.get")
    assert allowed(grants.publish, "$JS.API.CONSUMER.CREATE.SLMOPS_EVENTS")  # ephemeral only: the bare subject
    for subject in (
        "$JS.API.CONSUMER.CREATE.SLMOPS_CMDS.registry-commands.slmops.cmd.>",
        "$JS.API.CONSUMER.DURABLE.CREATE.SLMOPS_CMDS.registry-commands",
        "$JS.API.STREAM.UPDATE.SLMOPS_EVENTS",
        "$JS.ACK.SLMOPS_CMDS.registry-commands.1.1.1.1.0",
        "slmops.evt.model.registered",
        "slmops.rpc.registry.download_url.dev-1",
    ):
        assert not allowed(grants.publish, subject), subject


def test_a_clients_inbox_prefix_comes_from_its_credentials() -> None:
    user, account = tokens.KeyPair.create("user"), tokens.KeyPair.create("account")
    nats = {"type": "user", "tags": [f"{permissions.ROLE_TAG}device"]}
    token = tokens.encode(subject=user.public, name="dev-1", nats=nats, issuer=account)
    assert permissions.credentials_inbox(tokens.credentials(token, user)) == "_INBOX.device.dev-1"
    foreign = tokens.encode(subject=user.public, name="x", nats={"type": "user"}, issuer=account)
    assert permissions.credentials_inbox(tokens.credentials(foreign, user)) is None
