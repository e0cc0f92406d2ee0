"""The rollout service's stores over JetStream KV (`rollouts`, `desired`, `devices`), and its events.

Compare-and-set is KV's own: `create` (the key must not exist) and `update(last=revision)`; a
wrong revision is `RevisionConflict`. The per-device keys (`desired`, `devices`, the saved previous
states) are read from watched copies of their buckets (`KvCache`): a pass over 10,000 devices is a
dict lookup each, not a round trip each. The rollout records are read from the server, one per
pass, and listed from the bucket stream's subjects, as the registry does. Many writes go out
concurrently, a chunk at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Generic, TypeVar

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from services.rollout.ports import RevisionConflict
from shared import topology
from shared.kv_cache import KvCache
from shared.messages.device import DesiredState
from shared.messages.inventory import DeviceRecord
from shared.messages.rollout_record import RolloutRecord

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
K = TypeVar("K")
CHUNK = 200  # concurrent KV reads
WRITE_CHUNK = 500  # concurrent KV writes (each a publish awaiting its ack)
PREVIOUS_CHUNK = 500  # saved previous states per KV entry
PREVIOUS_CHUNK_BYTES = topology.RECORD_MAX_BYTES // 2
PREVIOUS = "previous"


class _Bucket:
    """Direct reads and compare-and-set writes (the rollout records: one read per pass)."""

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

    async def put(self, key: str, data: bytes, expected: int | None) -> int:
        kv = await self.kv()
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


class _CachedBucket(Generic[T]):
    """Reads from a watched copy of the bucket (`KvCache`), writes through to the server."""

    def __init__(self, js: JetStreamContext, bucket: str, parse: Callable[[bytes], T]) -> None:
        self._direct = _Bucket(js, bucket)
        self.cache = KvCache(js, bucket, parse)

    async def get(self, key: str) -> tuple[T, int] | None:
        await self.cache.ready()
        return self.cache.get(key)

    async def get_many(self, keys: Iterable[str]) -> dict[str, tuple[T, int]]:
        await self.cache.ready()
        found = {key: self.cache.get(key) for key in keys}
        return {key: value for key, value in found.items() if value is not None}

    async def keys(self) -> list[str]:
        await self.cache.ready()
        return list(self.cache.keys())

    async def put(self, key: str, data: bytes, expected: int | None) -> int:
        try:
            revision = await self._direct.put(key, data, expected)
        except RevisionConflict:
            await self.cache.refresh(key)  # someone else wrote it: see what they wrote
            raise
        self.cache.note(key, data, revision)
        return revision

    async def put_many(self, writes: Sequence[tuple[str, bytes, int | None]]) -> None:
        """Every write, concurrently; the first conflict is raised once all have been tried."""
        results = await _chunked(
            list(range(len(writes))), lambda i: _conflict_of(self.put(*writes[i])), chunk=WRITE_CHUNK
        )
        conflicts = [c for c in results.values() if c is not None]
        if conflicts:
            raise conflicts[0]

    async def delete(self, key: str, expected: int | None) -> None:
        try:
            await self._direct.delete(key, expected)
        finally:
            await self.cache.refresh(key)  # a delete does not say its revision

    async def close(self) -> None:
        await self.cache.stop()


class KvRolloutStore:
    def __init__(self, js: JetStreamContext) -> None:
        self._bucket = _Bucket(js, topology.KV_ROLLOUTS)
        self._previous = _CachedBucket(js, topology.KV_ROLLOUTS, _previous_doc)

    async def get(self, rollout_id: str) -> tuple[RolloutRecord, int] | None:
        return await self._bucket.get(rollout_id, RolloutRecord)

    async def create(self, record: RolloutRecord) -> int | None:
        try:
            return await self._bucket.put(record.rollout_id, _json(record), None)
        except RevisionConflict:
            return None

    async def update(self, record: RolloutRecord, revision: int) -> int:
        return await self._bucket.put(record.rollout_id, _json(record), revision)

    async def list(self) -> Sequence[RolloutRecord]:
        found = await self._bucket.get_many(await self._bucket.keys("*"), RolloutRecord)
        return [record for record, _ in found.values()]

    async def save_previous(self, rollout_id: str, device_id: str, previous: DesiredState | None) -> None:
        await self.save_previous_many(rollout_id, [(device_id, previous)])

    async def save_previous_many(self, rollout_id: str, saves: Sequence[tuple[str, DesiredState | None]]) -> None:
        """One entry per chunk of devices (`<rollout>.previous.<its first device>`), not one per
        device: a wave of 5,000 is a dozen writes. Create-only, and a device already saved in an
        earlier chunk is left out, so a repeat after a crash never replaces what a device had."""
        saved = await self.previous(rollout_id, [device_id for device_id, _ in saves])
        docs: list[tuple[str, bytes, int | None]] = []
        chunk: dict[str, object] = {}
        size = 0
        for device_id, previous in saves:
            if device_id in saved or device_id in chunk:
                continue
            state = previous.model_dump(mode="json") if previous is not None else None
            chunk[device_id] = state
            size += len(json.dumps(state)) + len(device_id) + 8
            if len(chunk) >= PREVIOUS_CHUNK or size >= PREVIOUS_CHUNK_BYTES:
                docs.append(_previous_chunk(rollout_id, chunk))
                chunk, size = {}, 0
        if chunk:
            docs.append(_previous_chunk(rollout_id, chunk))
        with contextlib.suppress(RevisionConflict):  # created meanwhile: the first one stays
            await self._previous.put_many(docs)

    async def previous(self, rollout_id: str, device_ids: Iterable[str]) -> Mapping[str, DesiredState | None]:
        await self._previous.cache.ready()
        found: dict[str, DesiredState | None] = {}
        for key in self._previous.cache.keys(f"{rollout_id}.{PREVIOUS}."):
            entry = self._previous.cache.get(key)
            if entry is not None:
                for device_id, state in entry[0].items():
                    found.setdefault(device_id, state)
        return {device_id: found[device_id] for device_id in device_ids if device_id in found}

    async def close(self) -> None:
        """Stop watching the bucket."""
        await self._previous.close()


class KvDesiredStore:
    def __init__(self, js: JetStreamContext) -> None:
        self._bucket = _CachedBucket(js, topology.KV_DESIRED, DesiredState.model_validate_json)

    async def get_many(self, device_ids: Iterable[str]) -> Mapping[str, tuple[DesiredState, int]]:
        return await self._bucket.get_many(device_ids)

    async def put(self, desired: DesiredState, *, expected_revision: int | None) -> int:
        return await self._bucket.put(desired.device_id, _json(desired), expected_revision)

    async def put_many(self, writes: Sequence[tuple[DesiredState, int | None]]) -> None:
        await self._bucket.put_many([(d.device_id, _json(d), expected) for d, expected in writes])

    async def delete(self, device_id: str, *, expected_revision: int | None) -> None:
        await self._bucket.delete(device_id, expected_revision)

    async def close(self) -> None:
        """Stop watching the bucket."""
        await self._bucket.close()


class KvDeviceStore:
    def __init__(self, js: JetStreamContext) -> None:
        self._bucket = _CachedBucket(js, topology.KV_DEVICES, DeviceRecord.model_validate_json)

    async def get(self, device_id: str) -> tuple[DeviceRecord, int] | None:
        return await self._bucket.get(device_id)

    async def put(self, record: DeviceRecord, *, expected_revision: int | None) -> int:
        return await self._bucket.put(record.device_id, _json(record), expected_revision)

    async def all(self) -> Sequence[DeviceRecord]:
        found = await self._bucket.get_many(await self._bucket.keys())
        return [record for record, _ in found.values()]

    async def get_many(self, device_ids: Iterable[str]) -> Mapping[str, DeviceRecord]:
        found = await self._bucket.get_many(device_ids)
        return {key: record for key, (record, _) in found.items()}

    async def close(self) -> None:
        """Stop watching the bucket."""
        await self._bucket.close()


def _json(value: BaseModel) -> bytes:
    return value.model_dump_json().encode()


def _previous_chunk(rollout_id: str, chunk: Mapping[str, object]) -> tuple[str, bytes, None]:
    first = next(iter(chunk))
    return f"{rollout_id}.{PREVIOUS}.{first}", json.dumps({"previous": chunk}).encode(), None


def _previous_doc(data: bytes) -> dict[str, DesiredState | None]:
    """A chunk of saved previous states (a rollout record parses to nothing: it is not one)."""
    chunk = json.loads(data).get("previous")
    if not isinstance(chunk, dict):
        return {}
    return {
        device_id: DesiredState.model_validate(state) if state is not None else None
        for device_id, state in chunk.items()
    }


async def _conflict_of(write: Awaitable[object]) -> RevisionConflict | None:
    try:
        await write
    except RevisionConflict as conflict:
        return conflict
    return None


async def _chunked(keys: list[K], read: Callable[[K], Awaitable[T]], *, chunk: int = CHUNK) -> dict[K, T]:
    out: dict[K, T] = {}
    for i in range(0, len(keys), chunk):
        chunk_keys = keys[i : i + chunk]
        for key, value in zip(chunk_keys, await asyncio.gather(*(read(k) for k in chunk_keys)), strict=True):
            out[key] = value
    return out
