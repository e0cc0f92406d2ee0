"""The blueprints service's adapters on NATS: its KV bucket, watched read-only copies of the rollout
service's buckets, the registry and optimizer over request/reply, and commands with their verdicts.

Reading `devices`, `desired` and `rollouts` directly departs from "ask with a request" on purpose
(docs/ARCHITECTURE.md): the inventory of a fleet is 10,000 records, more than any reply holds, and a
watch delivers what changes (a device enrolling, relabelled, switched) as it happens. The grant is
read-only; the rollout service stays their only writer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import TypeVar

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared import bus, topology
from shared.clients import RegistryClient
from shared.clients.rpc import call
from shared.errors import Conflict, NotFound
from shared.kv_cache import KvCache
from shared.messages.blueprint_api import BlueprintStatus, StoredBlueprint
from shared.messages.device import DesiredState
from shared.messages.envelope import Message
from shared.messages.inventory import DeviceRecord
from shared.messages.optimizer import LIST_PROFILES, ListProfiles
from shared.messages.registry import ModelDetail
from shared.messages.rollout_record import RolloutRecord

T = TypeVar("T")
COMMAND_VERDICT_SECONDS = 5.0
SPEC, STATUS = "spec.", "status."


class KvBlueprintStore:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self._js.key_value(topology.KV_BLUEPRINTS)
        return self._kv

    async def specs(self) -> Mapping[str, tuple[StoredBlueprint, int]]:
        kv = await self._bucket()
        prefix = f"$KV.{topology.KV_BLUEPRINTS}."
        info = await self._js.stream_info(f"KV_{topology.KV_BLUEPRINTS}", subjects_filter=f"{prefix}{SPEC}*")
        out = {}
        for subject in sorted(info.state.subjects or {}):
            key = subject.removeprefix(prefix)
            found = await self._get(kv, key)
            if found is not None:
                out[key.removeprefix(SPEC)] = (StoredBlueprint.model_validate_json(found[0]), found[1])
        return out

    async def put_spec(self, stored: StoredBlueprint, expected: int | None) -> int:
        return await self._put(SPEC + stored.blueprint.name, stored.model_dump_json().encode(), expected)

    async def delete_spec(self, name: str, expected: int) -> None:
        kv = await self._bucket()
        try:
            await kv.delete(SPEC + name, last=expected)
        except KeyWrongLastSequenceError:
            raise Conflict(f"blueprint {name!r} changed since it was read; try again") from None

    async def status(self, name: str) -> tuple[BlueprintStatus, int] | None:
        found = await self._get(await self._bucket(), STATUS + name)
        return (BlueprintStatus.model_validate_json(found[0]), found[1]) if found else None

    async def put_status(self, status: BlueprintStatus, expected: int | None) -> int:
        return await self._put(STATUS + status.name, status.model_dump_json().encode(), expected)

    async def delete_status(self, name: str) -> None:
        with contextlib.suppress(KeyNotFoundError):
            await (await self._bucket()).purge(STATUS + name)

    async def _get(self, kv: KeyValue, key: str) -> tuple[bytes, int] | None:
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:  # KeyDeletedError too
            return None
        return (entry.value, int(entry.revision or 0)) if entry.value else None

    async def _put(self, key: str, data: bytes, expected: int | None) -> int:
        kv = await self._bucket()
        try:
            if expected is None:
                return int(await kv.create(key, data))
            return int(await kv.update(key, data, last=expected))
        except KeyWrongLastSequenceError:
            raise Conflict(f"{key} changed since it was read") from None


class WatchedFleet:
    """The rollout service's buckets as watched, read-only caches; `on_change`, once set, is called
    whenever an entry of any of them moves."""

    def __init__(self, js: JetStreamContext) -> None:
        self.on_change: Callable[[], None] | None = None

        def notify(key: str, value: bytes | None, revision: int) -> None:
            if self.on_change is not None:
                self.on_change()

        self._devices = KvCache(js, topology.KV_DEVICES, DeviceRecord.model_validate_json, on_update=notify)
        self._desired = KvCache(js, topology.KV_DESIRED, DesiredState.model_validate_json, on_update=notify)
        self._rollouts = KvCache(js, topology.KV_ROLLOUTS, RolloutRecord.model_validate_json, on_update=notify)

    async def devices(self) -> Mapping[str, DeviceRecord]:
        return await _all(self._devices)

    async def desired(self) -> Mapping[str, DesiredState]:
        return await _all(self._desired)

    async def rollouts(self) -> Mapping[str, RolloutRecord]:
        # The bucket also holds each rollout's saved previous states (`<id>.previous.<device>`).
        await self._rollouts.ready()
        out = {}
        for key in self._rollouts.keys():
            if "." in key:
                continue
            entry = self._rollouts.get(key)
            if entry is not None:
                out[key] = entry[0]
        return out

    async def close(self) -> None:
        for cache in (self._devices, self._desired, self._rollouts):
            await cache.stop()


async def _all(cache: KvCache[T]) -> dict[str, T]:
    await cache.ready()
    out = {}
    for key in cache.keys():
        entry = cache.get(key)
        if entry is not None:
            out[key] = entry[0]
    return out


class RegistryOverBus:
    def __init__(self, client: RegistryClient) -> None:
        self._client = client

    async def get_model(self, name: str, ref: str) -> ModelDetail | None:
        try:
            return await self._client.get_model(name, ref)
        except NotFound:
            return None

    async def models(self) -> frozenset[str]:
        return frozenset(m.name for m in await self._client.list_models())


class OptimizerOverBus:
    def __init__(self, nc: Client, *, source: str) -> None:
        self._nc = nc
        self._source = source

    async def profiles(self) -> Mapping[str, str]:
        found = await call(self._nc, LIST_PROFILES, ListProfiles(), source=self._source)
        return {p.name: p.device_class for p in found}


class BusCommandSender:
    def __init__(self, nc: Client, *, source: str) -> None:
        self._nc = nc
        self._source = source

    async def send(self, command: Message, command_id: str, *, wait: bool) -> str | None:
        _, outcome = await bus.send_command(
            self._nc,
            command,
            source=self._source,
            command_id=command_id,
            wait=COMMAND_VERDICT_SECONDS if wait else None,
        )
        if outcome is not None and outcome.status == "rejected":
            return outcome.reason or "refused"
        return None
