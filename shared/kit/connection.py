"""What a service does when its NATS connection goes: wait while nats-py reconnects, exit once it has
given up.

nats-py reconnects on its own after a dropped connection (60 attempts, 2 s apart, by default), and
the service carries on once it is back. But a connection can also be closed for good: the reconnect
attempts ran out, or the server closed it over a protocol error (a message over `max_payload`
does that, and a client does not reconnect after it). Then FastStream's pull loops fail at once, over
and over: the process stays alive at 100 % CPU, handles nothing, and a supervisor watching pids sees
nothing wrong. So the kit exits the process instead (`exit_process`, code `EXIT_CONNECTION_CLOSED`),
and whatever runs it (`slmops up`'s supervisor, compose's `restart:`, systemd) starts a fresh one.
A service embedded in another program (a test) is told through its own callback instead.

While disconnected the health subject cannot be asked at all (it is on the same connection), and the
kit answers "not ready" until it is connected again (`ServiceKit`'s health handler checks the
connection, not only start-up).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("slmops.kit")

# EX_UNAVAILABLE (sysexits.h): a service it needs is unavailable. Non-zero, so a supervisor restarts it.
EXIT_CONNECTION_CLOSED = 69


@dataclass
class ConnectionWatch:
    """nats-py's connection callbacks for one service (`disconnected_cb`, `reconnected_cb`,
    `closed_cb` of the broker: see the module docstring).

    Attributes:
        on_closed: called once the connection is closed for good, unless the service is stopping.
        stopping: set by the kit's shutdown hook, so the close that shutdown itself causes is expected.
    """

    service: str
    on_closed: Callable[[], None] | None = None
    stopping: bool = False

    async def disconnected(self) -> None:
        if not self.stopping:
            log.warning("NATS connection lost; reconnecting", extra={"service": self.service})

    async def reconnected(self) -> None:
        log.info("NATS connection restored", extra={"service": self.service})

    async def closed(self) -> None:
        if self.stopping:
            return
        log.critical(
            "NATS connection closed for good; stopping so that a supervisor starts the service again",
            extra={"service": self.service},
        )
        if self.on_closed is not None:
            self.on_closed()


def exit_process() -> None:
    """End the process now with `EXIT_CONNECTION_CLOSED`, logs flushed.

    `os._exit`, not `sys.exit`: this runs inside a nats-py callback task, where SystemExit would end
    that task and not the process, and there is nothing left to shut down gracefully: the connection
    is gone, and every message not acknowledged is redelivered to the next process.
    """
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: S110 (exiting regardless)
            pass
    os._exit(EXIT_CONNECTION_CLOSED)
