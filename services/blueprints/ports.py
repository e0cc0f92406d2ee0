"""The blueprints service's collaborators, as its use cases need them (adapters: `adapters/`).

In production: its own KV bucket `blueprints`, read-only watched copies of the rollout service's
`devices`, `desired` and `rollouts` buckets, the registry and the optimizer over request/reply, and
commands to the rollout service, the optimizer and the registry. In the fast tests: dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from shared.messages.blueprint_api import BlueprintStatus, StoredBlueprint
from shared.messages.device import DesiredState
from shared.messages.envelope import Message
from shared.messages.inventory import DeviceRecord
from shared.messages.registry import ModelDetail
from shared.messages.rollout_record import RolloutRecord


class BlueprintStore(Protocol):
    """KV `blueprints`: `spec.<name>` -> StoredBlueprint, `status.<name>` -> BlueprintStatus.

    Writes are compare-and-set: `expected` is the revision read (None: the key must not exist);
    a moved entry raises `shared.errors.Conflict`.
    """

    async def specs(self) -> Mapping[str, tuple[StoredBlueprint, int]]:
        """Every stored blueprint with its revision, by name."""
        ...

    async def put_spec(self, stored: StoredBlueprint, expected: int | None) -> int: ...

    async def delete_spec(self, name: str, expected: int) -> None: ...

    async def status(self, name: str) -> tuple[BlueprintStatus, int] | None: ...

    async def put_status(self, status: BlueprintStatus, expected: int | None) -> int: ...

    async def delete_status(self, name: str) -> None:
        """Forget what the controller did about a deleted blueprint (gone already is fine)."""
        ...


class Fleet(Protocol):
    """What the rollout service keeps about the devices and its rollouts, read-only."""

    async def devices(self) -> Mapping[str, DeviceRecord]: ...

    async def desired(self) -> Mapping[str, DesiredState]: ...

    async def rollouts(self) -> Mapping[str, RolloutRecord]: ...


class Registry(Protocol):
    async def get_model(self, name: str, ref: str) -> ModelDetail | None:
        """The version `ref` (a version, an alias, `latest`) names; None: no such model, version or alias."""
        ...

    async def models(self) -> frozenset[str]:
        """Every registered model's name."""
        ...


class Optimizer(Protocol):
    async def profiles(self) -> Mapping[str, str]:
        """Optimization profile name -> the device class it is measured for."""
        ...


class CommandSender(Protocol):
    async def send(self, command: Message, command_id: str, *, wait: bool) -> str | None:
        """Queue `command` with its deterministic id. With `wait`, the reason if its service refused it
        within a few seconds; else (accepted, no verdict yet, or not waited for) None: the next pass
        observes what happened."""
        ...


class Announcer(Protocol):
    async def event(self, event: Message, event_id: str) -> None:
        """Publish an event with its deterministic id (a repeat is de-duplicated)."""
        ...
