"""In-memory adapters for the rollout service's fast tests: dicts with revisions, as KV has them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from services.rollout.ports import RevisionConflict
from shared.errors import NotFound
from shared.messages.device import DesiredState
from shared.messages.envelope import Message
from shared.messages.inventory import DeviceRecord
from shared.messages.registry import ModelDetail
from shared.messages.rollout_record import RolloutRecord
from shared.messages.telemetry import EvaluateGate, GateEvaluation


@dataclass
class Revisions:
    """Entries with the bucket-wide revision counter KV uses."""

    entries: dict[str, tuple[object, int]] = field(default_factory=dict)
    last: int = 0

    def put(self, key: str, value: object, expected: int | None) -> int:
        current = self.entries.get(key)
        if (current[1] if current else None) != expected:
            raise RevisionConflict(key)
        self.last += 1
        self.entries[key] = (value, self.last)
        return self.last


@dataclass
class MemoryRolloutStore:
    records: Revisions = field(default_factory=Revisions)
    previous_states: dict[tuple[str, str], DesiredState | None] = field(default_factory=dict)

    async def get(self, rollout_id: str) -> tuple[RolloutRecord, int] | None:
        found = self.records.entries.get(rollout_id)
        return (found[0], found[1]) if found else None  # type: ignore[return-value]

    async def create(self, record: RolloutRecord) -> int | None:
        if record.rollout_id in self.records.entries:
            return None
        return self.records.put(record.rollout_id, record, None)

    async def update(self, record: RolloutRecord, revision: int) -> int:
        return self.records.put(record.rollout_id, record, revision)

    async def list(self) -> Sequence[RolloutRecord]:
        return [value for value, _ in self.records.entries.values()]  # type: ignore[misc]

    async def save_previous(self, rollout_id: str, device_id: str, previous: DesiredState | None) -> None:
        self.previous_states.setdefault((rollout_id, device_id), previous)

    async def save_previous_many(self, rollout_id: str, saves: Sequence[tuple[str, DesiredState | None]]) -> None:
        for device_id, previous in saves:
            await self.save_previous(rollout_id, device_id, previous)

    async def previous(self, rollout_id: str, device_ids: Iterable[str]) -> Mapping[str, DesiredState | None]:
        return {d: self.previous_states[(rollout_id, d)] for d in device_ids if (rollout_id, d) in self.previous_states}


@dataclass
class MemoryDesiredStore:
    entries: Revisions = field(default_factory=Revisions)
    writes: int = 0

    async def get_many(self, device_ids: Iterable[str]) -> Mapping[str, tuple[DesiredState, int]]:
        return {d: self.entries.entries[d] for d in device_ids if d in self.entries.entries}  # type: ignore[misc]

    async def put(self, desired: DesiredState, *, expected_revision: int | None) -> int:
        self.writes += 1
        return self.entries.put(desired.device_id, desired, expected_revision)

    async def put_many(self, writes: Sequence[tuple[DesiredState, int | None]]) -> None:
        conflicts = []
        for desired, expected in writes:
            try:
                await self.put(desired, expected_revision=expected)
            except RevisionConflict as conflict:
                conflicts.append(conflict)
        if conflicts:
            raise conflicts[0]

    async def delete(self, device_id: str, *, expected_revision: int | None) -> None:
        current = self.entries.entries.get(device_id)
        if current is None:
            return
        if current[1] != expected_revision:
            raise RevisionConflict(device_id)
        self.writes += 1
        del self.entries.entries[device_id]


@dataclass
class MemoryDeviceStore:
    entries: Revisions = field(default_factory=Revisions)

    async def get(self, device_id: str) -> tuple[DeviceRecord, int] | None:
        found = self.entries.entries.get(device_id)
        return (found[0], found[1]) if found else None  # type: ignore[return-value]

    async def put(self, record: DeviceRecord, *, expected_revision: int | None) -> int:
        return self.entries.put(record.device_id, record, expected_revision)

    async def all(self) -> Sequence[DeviceRecord]:
        return [value for value, _ in self.entries.entries.values()]  # type: ignore[misc]

    async def get_many(self, device_ids: Iterable[str]) -> Mapping[str, DeviceRecord]:
        return {d: self.entries.entries[d][0] for d in device_ids if d in self.entries.entries}  # type: ignore[misc]


@dataclass
class MemoryRegistry:
    models: dict[tuple[str, str], ModelDetail] = field(default_factory=dict)

    async def get_model(self, name: str, ref: str) -> ModelDetail:
        found = self.models.get((name, ref))
        if found is None:
            raise NotFound(f"model {name!r} has no version or alias {ref!r}")
        return found


@dataclass
class MemoryTelemetry:
    """Answers every gate with `verdict_for(request)`; `reported` names who sent windows, per wave."""

    reported: dict[tuple[str, int], set[str]] = field(default_factory=dict)
    verdict: str = "Successful"
    requests: list[EvaluateGate] = field(default_factory=list)

    async def evaluate_gate(self, request: EvaluateGate) -> GateEvaluation:
        self.requests.append(request)
        return GateEvaluation(
            verdict=self.verdict,
            method="threshold",
            observed=0.0,
            wave_value=0.0,
            samples=1000,
            min_samples=request.gate.min_samples,
            devices=1,
            reason=f"{request.gate.metric} judged {self.verdict}",
        )

    async def reporters(self, *, rollout_id: str, wave: int, digests: list[str]) -> set[str]:
        return set(self.reported.get((rollout_id, wave), set()))


@dataclass
class MemoryAnnouncer:
    events: dict[str, Message] = field(default_factory=dict)

    async def event(self, event: Message, event_id: str) -> None:
        self.events.setdefault(event_id, event)
