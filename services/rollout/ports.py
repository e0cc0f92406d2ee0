"""The rollout service's collaborators, as its use cases need them (adapters: `adapters/`).

Every store is a JetStream KV bucket in production and a dict in the fast tests. Writes that
could race are compare-and-set on the entry's revision: the rollout service may run as several
replicas, and it is the only writer of `desired`, `devices` and `rollouts`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from shared.errors import Conflict
from shared.messages.device import DesiredState
from shared.messages.envelope import Message
from shared.messages.inventory import DeviceRecord
from shared.messages.registry import ModelDetail
from shared.messages.rollout_record import RolloutRecord
from shared.messages.telemetry import EvaluateGate, GateEvaluation


class RevisionConflict(Conflict):
    """The entry is no longer at the revision the writer read: observe again and decide again."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key} changed since it was read")
        self.key = key


class RolloutStore(Protocol):
    """KV `rollouts`: `<rollout id>` -> RolloutRecord, and `<rollout id>.previous.<device id>`."""

    async def get(self, rollout_id: str) -> tuple[RolloutRecord, int] | None:
        """The record and its revision; None when there is none."""
        ...

    async def create(self, record: RolloutRecord) -> int | None:
        """Store a new record; its revision, or None when one with that id exists already."""
        ...

    async def update(self, record: RolloutRecord, revision: int) -> int:
        """Replace the record at `revision`; the new revision.

        Raises:
            RevisionConflict: it is at another revision.
        """
        ...

    async def list(self) -> Sequence[RolloutRecord]:
        """Every rollout record (not the saved previous states)."""
        ...

    async def save_previous(self, rollout_id: str, device_id: str, previous: DesiredState | None) -> None:
        """Keep what the device's desired state was before the rollout's first write; a second save
        for the same device keeps the first (create-only: a repeat after a crash must not replace
        it with the rollout's own write)."""
        ...

    async def save_previous_many(self, rollout_id: str, saves: Sequence[tuple[str, DesiredState | None]]) -> None:
        """`save_previous` for each (device id, previous state), concurrently."""
        ...

    async def previous(self, rollout_id: str, device_ids: Iterable[str]) -> Mapping[str, DesiredState | None]:
        """The saved previous states of those devices that have one (a device absent: never saved)."""
        ...


class DesiredStore(Protocol):
    """KV `desired`: `<device id>` -> DesiredState."""

    async def get_many(self, device_ids: Iterable[str]) -> Mapping[str, tuple[DesiredState, int]]:
        """Each device's desired state and revision (a device without one is absent)."""
        ...

    async def put(self, desired: DesiredState, *, expected_revision: int | None) -> int:
        """Write it if the entry is still at `expected_revision` (None: it must not exist).

        Raises:
            RevisionConflict: it is not.
        """
        ...

    async def put_many(self, writes: Sequence[tuple[DesiredState, int | None]]) -> None:
        """`put` each (desired state, expected revision), concurrently; all are tried.

        Raises:
            RevisionConflict: one of them (the first) found its entry moved; the others are written.
        """
        ...

    async def delete(self, device_id: str, *, expected_revision: int | None) -> None:
        """Remove the entry if it is still at `expected_revision` (gone already is fine).

        Raises:
            RevisionConflict: it is at another.
        """
        ...


class DeviceStore(Protocol):
    """KV `devices`: `<device id>` -> DeviceRecord."""

    async def get(self, device_id: str) -> tuple[DeviceRecord, int] | None: ...

    async def put(self, record: DeviceRecord, *, expected_revision: int | None) -> int:
        """Raises: RevisionConflict."""
        ...

    async def all(self) -> Sequence[DeviceRecord]: ...

    async def get_many(self, device_ids: Iterable[str]) -> Mapping[str, DeviceRecord]: ...


class Registry(Protocol):
    async def get_model(self, name: str, ref: str) -> ModelDetail:
        """Raises: NotFound (no such model, version or alias)."""
        ...


class Telemetry(Protocol):
    async def evaluate_gate(self, request: EvaluateGate) -> GateEvaluation: ...

    async def reporters(self, *, rollout_id: str, wave: int, digests: list[str]) -> set[str]: ...


class Announcer(Protocol):
    async def event(self, event: Message, event_id: str) -> None:
        """Publish an event with its deterministic id (a repeat is de-duplicated)."""
        ...
