"""The telemetry service's collaborators, as the use cases need them (adapters: `adapters/`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from shared.errors import TransientError
from shared.messages.device import OutputMoments
from shared.messages.envelope import Message


class FoldConflict(TransientError):
    """The fold log no longer ends where the caller's view does: another instance appended first
    (the caller catches up and tries again)."""

    def __init__(self, last: int | None) -> None:
        super().__init__(f"the fold log moved on (its last position is {last})")
        self.last = last


class FoldLog(Protocol):
    """The fold log (SLMOPS_TELEMETRY_FOLDS): records in one order, appended only at the expected end."""

    async def append(self, record: bytes, *, expected_last: int) -> int:
        """Append `record` if the log's last position is `expected_last`; returns its position.

        Raises:
            FoldConflict: the log's last position is another.
        """
        ...

    async def last(self) -> int:
        """The log's last position (0 when empty)."""
        ...

    async def read(self, position: int) -> bytes | None:
        """The record at `position`; None if there is none (never written, or aged out)."""
        ...


class Snapshots(Protocol):
    """Where aggregates are saved with the fold position they reflect (KV `telemetry`)."""

    async def load(self) -> Sequence[tuple[str, bytes]]:
        """Every saved entry, as (key, value)."""
        ...

    async def save(self, key: str, value: bytes) -> None:
        """Save `value` under `key` (the caller decides what is newer)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove `key` (already gone is fine)."""
        ...


class Announcer(Protocol):
    """Where conclusions go: events (gate.verdict, drift.detected) and rollups."""

    async def event(self, event: Message, event_id: str) -> None:
        """Publish an event with its deterministic id."""
        ...

    async def rollup(self, rollup: Message, subject: str, rollup_id: str) -> None:
        """Publish a rollup on its subject with its deterministic id."""
        ...


class ModelCatalog(Protocol):
    """What the registry recorded of the digests devices run (KV `models`, read only)."""

    async def eval_outputs(self, digest: str) -> Mapping[str, OutputMoments] | None:
        """The digest's outputs on its version's evaluation set as the registry measured them
        (`EvalOutputs.outputs`); None when it is not registered, has no evaluation set, or the
        catalog cannot be read right now (the caller asks again later)."""
        ...
