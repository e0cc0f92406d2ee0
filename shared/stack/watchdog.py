"""When the supervisor restarts a child: dead, or alive but unready for longer than its grace.

A pid says only that a process exists: a nats-server that lost JetStream, an S3 gateway that lost
its filer or a service that lost its NATS connection at 100 % CPU all keep theirs. So each child
is judged on what it answers (the supervisor probes; this module only decides), and restarts back
off (0.5 s doubling to 30 s) so a child that cannot start does not spin. Time is passed in, so the
rules are tested without waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

MAX_BACKOFF = 30.0
SETTLE = 60.0  # ready this long after a restart: the back-off starts again from its shortest


@dataclass
class ChildWatch:
    """What the supervisor knows of one child (a server or a service)."""

    name: str
    grace: float  # how long it may be unready (after a start, or after being ready) before a restart
    started_at: float
    restarts: int = 0
    last_restart: dict[str, str] | None = None
    _streak: int = 0  # restarts since it last stayed ready for SETTLE seconds: the back-off's exponent
    _ready_since: float | None = None
    _unready_since: float | None = None

    def backoff(self) -> float:
        """Seconds a restart must wait after the previous start."""
        return float(min(MAX_BACKOFF, 0.5 * 2.0**self._streak))

    def observe(self, *, exit_code: int | None, ready: bool | None, now: float) -> str | None:
        """Record one look at the child; return why it must be restarted now, or None.

        Args:
            exit_code: None while the process runs.
            ready: the probe's answer, or None when it was not probed this time (or must not be
                judged, e.g. a service while NATS itself is down).
            now: time.monotonic().
        """
        if exit_code is not None:
            reason = f"exited with {exit_code}"
        elif ready is None:
            return None
        elif ready:
            self._unready_since = None
            if self._ready_since is None:
                self._ready_since = now
            if now - self._ready_since >= SETTLE:
                self._streak = 0
            return None
        else:
            self._ready_since = None
            if self._unready_since is None:
                self._unready_since = now
            unready_for = now - max(self._unready_since, self.started_at)
            if unready_for < self.grace:
                return None
            reason = f"alive but unready for {unready_for:.0f}s"
        if now - self.started_at < self.backoff():
            return None
        return reason

    def restarted(self, *, now: float, reason: str) -> None:
        """Record a restart (what `slmops status` and stack.json show)."""
        self.restarts += 1
        self._streak += 1
        self.started_at = now
        self._ready_since = None
        self._unready_since = None
        self.last_restart = {"at": datetime.now(UTC).isoformat(), "reason": reason}

    def describe(self) -> dict[str, object]:
        return {"restarts": self.restarts, "last_restart": self.last_restart}
