"""In-memory adapters for the blueprints service's fast tests: dicts with revisions, as KV has them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.errors import Conflict
from shared.messages.blueprint_api import BlueprintStatus, StoredBlueprint
from shared.messages.device import DesiredState
from shared.messages.envelope import Message
from shared.messages.inventory import DeviceRecord
from shared.messages.registry import ModelDetail
from shared.messages.rollout_record import RolloutRecord


@dataclass
class MemoryBlueprintStore:
    entries: dict[str, tuple[StoredBlueprint | BlueprintStatus, int]] = field(default_factory=dict)
    last: int = 0

    def _put(self, key: str, value: StoredBlueprint | BlueprintStatus, expected: int | None) -> int:
        current = self.entries.get(key)
        if (current[1] if current else None) != expected:
            raise Conflict(f"{key} changed since it was read")
        self.last += 1
        self.entries[key] = (value, self.last)
        return self.last

    async def specs(self) -> Mapping[str, tuple[StoredBlueprint, int]]:
        return {
            key.removeprefix("spec."): (value, revision)
            for key, (value, revision) in self.entries.items()
            if key.startswith("spec.") and isinstance(value, StoredBlueprint)
        }

    async def put_spec(self, stored: StoredBlueprint, expected: int | None) -> int:
        return self._put(f"spec.{stored.blueprint.name}", stored, expected)

    async def delete_spec(self, name: str, expected: int) -> None:
        current = self.entries.get(f"spec.{name}")
        if current is None or current[1] != expected:
            raise Conflict(f"spec.{name} changed since it was read")
        del self.entries[f"spec.{name}"]

    async def status(self, name: str) -> tuple[BlueprintStatus, int] | None:
        found = self.entries.get(f"status.{name}")
        if found is None or not isinstance(found[0], BlueprintStatus):
            return None
        return found[0], found[1]

    async def put_status(self, status: BlueprintStatus, expected: int | None) -> int:
        return self._put(f"status.{status.name}", status, expected)

    async def delete_status(self, name: str) -> None:
        self.entries.pop(f"status.{name}", None)


@dataclass
class MemoryFleet:
    device_records: dict[str, DeviceRecord] = field(default_factory=dict)
    desired_states: dict[str, DesiredState] = field(default_factory=dict)
    rollout_records: dict[str, RolloutRecord] = field(default_factory=dict)

    async def devices(self) -> Mapping[str, DeviceRecord]:
        return dict(self.device_records)

    async def desired(self) -> Mapping[str, DesiredState]:
        return dict(self.desired_states)

    async def rollouts(self) -> Mapping[str, RolloutRecord]:
        return dict(self.rollout_records)


@dataclass
class MemoryRegistry:
    """Versions by (model, version); aliases and `latest` resolved through `refs`."""

    details: dict[tuple[str, str], ModelDetail] = field(default_factory=dict)
    refs: dict[tuple[str, str], str] = field(default_factory=dict)

    async def get_model(self, name: str, ref: str) -> ModelDetail | None:
        version = self.refs.get((name, ref), ref)
        if ref == "latest" and (name, ref) not in self.refs:
            versions = sorted(v for (n, v) in self.details if n == name)
            version = versions[-1] if versions else ref
        return self.details.get((name, version))

    async def models(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.details)


@dataclass
class MemoryOptimizer:
    known: dict[str, str] = field(default_factory=dict)

    async def profiles(self) -> Mapping[str, str]:
        return dict(self.known)


@dataclass
class RecordingSender:
    """Remembers every command; refuses those whose id is in `refuse` with its reason."""

    sent: list[tuple[Message, str]] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)

    async def send(self, command: Message, command_id: str, *, wait: bool) -> str | None:
        self.sent.append((command, command_id))
        return self.refuse.get(command_id)


@dataclass
class RecordingAnnouncer:
    events: list[tuple[Message, str]] = field(default_factory=list)

    async def event(self, event: Message, event_id: str) -> None:
        self.events.append((event, event_id))
