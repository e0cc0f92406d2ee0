"""In-memory adapters: the fold log, snapshots and announcements, for the service's fast tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from services.telemetry.ports import FoldConflict
from shared.messages.device import OutputMoments
from shared.messages.envelope import Message


@dataclass
class MemoryFoldLog:
    """One list shared by every instance under test, as the stream is by every replica."""

    records: dict[int, bytes] = field(default_factory=dict)
    end: int = 0

    async def append(self, record: bytes, *, expected_last: int) -> int:
        if expected_last != self.end:
            raise FoldConflict(self.end)
        self.end += 1
        self.records[self.end] = record
        return self.end

    async def last(self) -> int:
        return self.end

    async def read(self, position: int) -> bytes | None:
        return self.records.get(position)


@dataclass
class MemorySnapshots:
    entries: dict[str, bytes] = field(default_factory=dict)

    async def load(self) -> Sequence[tuple[str, bytes]]:
        return sorted(self.entries.items())

    async def save(self, key: str, value: bytes) -> None:
        self.entries[key] = value

    async def delete(self, key: str) -> None:
        self.entries.pop(key, None)


@dataclass
class MemoryAnnouncer:
    events: dict[str, Message] = field(default_factory=dict)
    rollups: dict[str, tuple[str, Message]] = field(default_factory=dict)

    async def event(self, event: Message, event_id: str) -> None:
        self.events.setdefault(event_id, event)  # a repeated id is one message, as JetStream de-duplicates

    async def rollup(self, rollup: Message, subject: str, rollup_id: str) -> None:
        self.rollups.setdefault(rollup_id, (subject, rollup))


@dataclass
class MemoryModelCatalog:
    """Digest -> its evaluation-set outputs, as a test registers them."""

    outputs: dict[str, dict[str, OutputMoments]] = field(default_factory=dict)
    lookups: int = 0

    async def eval_outputs(self, digest: str) -> Mapping[str, OutputMoments] | None:
        self.lookups += 1
        return self.outputs.get(digest)
