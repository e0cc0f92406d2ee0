"""A connection closed for good ends the service (for a supervisor to restart it); the close its own
shutdown causes does not, and only well-formed inboxes get replies."""

from __future__ import annotations

from shared.kit.connection import ConnectionWatch
from shared.subjects import valid_inbox


async def test_a_close_for_good_calls_on_closed_once_per_close() -> None:
    calls: list[str] = []
    watch = ConnectionWatch(service="registry", on_closed=lambda: calls.append("closed"))
    await watch.disconnected()
    await watch.reconnected()
    assert calls == []
    await watch.closed()
    assert calls == ["closed"]


async def test_the_close_of_a_shutdown_is_expected() -> None:
    calls: list[str] = []
    watch = ConnectionWatch(service="registry", on_closed=lambda: calls.append("closed"))
    watch.stopping = True
    await watch.closed()
    assert calls == []


def test_only_a_well_formed_inbox_is_replied_to() -> None:
    assert valid_inbox("_INBOX.abc123") == "_INBOX.abc123"
    assert valid_inbox("_INBOX.service.registry.Xy_9-z") == "_INBOX.service.registry.Xy_9-z"
    for bad in (
        None,
        "",
        "_INBOX.",
        "_INBOX..x",
        "_INBOX.a b",
        "_INBOX.>",
        "_INBOX.*",
        "slmops.cmd.x",
        "_INBOX." + "a" * 300,
    ):
        assert valid_inbox(bad) is None, bad
