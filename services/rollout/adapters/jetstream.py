"""The rollout service's stores over JetStream KV (`rollouts`, `desired`, `devices`), and its events.

Compare-and-set is KV's own: `create` (the key must not exist) and `update(last=revision)`; a
wrong revision is `RevisionConflict`. Keys are listed from the bucket stream's subjects, as the
registry does (`services/registry/adapters/nats_kv.py` says why not a watcher). Many keys are read
concurrently, a chunk at a time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from services.rollout.ports import RevisionConflict
from shared import topology
from shared.messages.device import DesiredState
from shared.messages.envelope import Message
from shared.messages.inventory import DeviceRecord
from shared.messages.rollout_record import RolloutRecord
from shared.outcomes import Outcome

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
CHUNK = 200  # concurrent KV reads
PREVIOUS = "previous"


class _Bucket:
    def __init__(self, js: JetStreamContext, bucket: str) -> None:
        self._js = js
        self.bucket = bucket
        self._kv: KeyValue | None = None

    async def kv(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self._js.key_value(self.bucket)
        return self._kv

    async def get(self, key: str, model: type[M]) -> tuple[M, int] | None:
        try:
            entry = await (await self.kv()).get(key)
        except KeyNotFoundError:  # KeyDeletedError too
            return None
        if not entry.value:
            return None
        return model.model_validate_json(entry.value), int(entry.revision or 0)

    async def get_many(self, keys: Iterable[str], model: type[M]) -> dict[str, tuple[M, int]]:
        found = await _chunked(list(keys), lambda key: self.get(key, model))
        return {key: value for key, value in found.items() if value is not None}

    async def put(self, key: str, value: BaseModel, expected: int | None) -> int:
        kv = await self.kv()
        data = value.model_dump_json().encode()
        try:
            if expected is None:
                return int(await kv.create(key, data))
            return int(await kv.update(key, data, last=expected))
        except KeyWrongLastSequenceError:
            raise RevisionConflict(key) from None

    async def delete(self, key: str, expected: int | None) -> None:
        kv = await self.kv()
        try:
            await kv.delete(key, last=expected)
        except KeyWrongLastSequenceError:
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                return  # gone already (deleted by the same decision's earlier attempt)
            if entry.value:
                raise RevisionConflict(key) from None
        except KeyNotFoundError:
            pass

    async def keys(self, pattern: str) -> list[str]:
        prefix = f"$KV.{self.bucket}."
        info = await self._js.stream_info(f"KV_{self.bucket}", subjects_filter=prefix + pattern)
        return sorted(subject.removeprefix(prefix) for subject in info.state.subjects or {})


class KvRolloutStore:
    def __init__(self, js: JetStreamContext) -> None:
        self._bucket = _Bucket(js, topology.KV_ROLLOUTS)

    async def get(self, rollout_id: str) -> tuple[RolloutRecord, int] | None:
        return await self._bucket.get(rollout_id, RolloutRecord)

    async def create(self, record: RolloutRecord) -> int | None:
        try:
            return await self._bucket.put(record.rollout_id, record, None)
        except RevisionConflict:
            return None

    async def update(self, record: RolloutRecord, revision: int) -> int:
        return await self._bucket.put(record.rollout_id, record, revision)

    async def list(self) -> Sequence[RolloutRecord]:
        found = await self._bucket.get_many(await self._bucket.keys("*"), RolloutRecord)
        return [record for record, _ in found.values()]

    async def save_previous(self, rollout_id: str, device_id: str, previous: DesiredState | None) -> None:
        kv = await self._bucket.kv()
        doc = {"previous": previous.model_dump(mode="json") if previous is not None else None}
        try:
            await kv.create(f"{rollout_id}.{PREVIOUS}.{device_id}", json.dumps(doc).encode())
        except KeyWrongLastSequenceError:
            pass  # saved before (a repeat after a crash): the first one is what the device had

    async def previous(self, rollout_id: str, device_ids: Iterable[str]) -> Mapping[str, DesiredState | None]:
        kv = await self._bucket.kv()

        async def one(device_id: str) -> tuple[bool, DesiredState | None]:
            try:
                entry = await kv.get(f"{rollout_id}.{PREVIOUS}.{device_id}")
            except KeyNotFoundError:
                return False, None
            doc = json.loads(entry.value or b"{}")
            saved = doc.get("previous")
            return True, DesiredState.model_validate(saved) if saved is not None else None

        found = await _chunked(list(device_ids), one)
        return {device_id: state for device_id, (saved, state) in found.items() if saved}


class KvDesiredStore:
    def __init__(self, js: JetStreamContext) -> None:
        self._bucket = _Bucket(js, topology.KV_DESIRED)

    async def get_many(self, device_ids: Iterable[str]) -> Mapping[str, tuple[DesiredState, int]]:
        return await self._bucket.get_many(device_ids, DesiredState)

    async def put(self, desired: DesiredState, *, expected_revision: int | None) -> int:
        return await self._bucket.put(desired.device_id, desired, expected_revision)

    async def delete(self, device_id: str, *, expected_revision: int | None) -> None:
        await self._bucket.delete(device_id, expected_revision)


class KvDeviceStore:
    def __init__(self, js: JetStreamContext) -> None:
        self._bucket = _Bucket(js, topology.KV_DEVICES)

    async def get(self, device_id: str) -> tuple[DeviceRecord, int] | None:
        return await self._bucket.get(device_id, DeviceRecord)

    async def put(self, record: DeviceRecord, *, expected_revision: int | None) -> int:
        return await self._bucket.put(record.device_id, record, expected_revision)

    async def all(self) -> Sequence[DeviceRecord]:
        found = await self._bucket.get_many(await self._bucket.keys(">"), DeviceRecord)
        return [record for record, _ in found.values()]

    async def get_many(self, device_ids: Iterable[str]) -> Mapping[str, DeviceRecord]:
        found = await self._bucket.get_many(device_ids, DeviceRecord)
        return {key: record for key, (record, _) in found.items()}


class Outcomes(Protocol):
    """The kit's publisher, which checks the event is one the service declared."""

    async def outcome(self, outcome: Outcome) -> None: ...


class KitAnnouncer:
    def __init__(self, outcomes: Outcomes) -> None:
        self._outcomes = outcomes

    async def event(self, event: Message, event_id: str) -> None:
        await self._outcomes.outcome(Outcome(status="applied", events=[(event, event_id)]))


async def _chunked(keys: list[str], read: Callable[[str], Awaitable[T]]) -> dict[str, T]:
    out: dict[str, T] = {}
    for i in range(0, len(keys), CHUNK):
        chunk = keys[i : i + CHUNK]
        for key, value in zip(chunk, await asyncio.gather(*(read(k) for k in chunk)), strict=True):
            out[key] = value
    return out
