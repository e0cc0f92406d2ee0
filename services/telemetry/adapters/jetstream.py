"""The ports over JetStream: the fold log stream, the `telemetry` KV bucket, events, rollups and the
registry's records (KV `models`, read only)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import APIError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from services.telemetry.ports import FoldConflict
from shared import bus, subjects, topology
from shared.messages.device import OutputMoments
from shared.messages.envelope import Message, wrap
from shared.messages.registry import ModelVersionRecord, VariantRecord
from shared.outcomes import Outcome, Outcomes

log = logging.getLogger(__name__)

WRONG_LAST_SEQUENCE = 10071  # JetStream's error code for a failed Nats-Expected-Last-Sequence
FOLDS_API = (
    f"{subjects.TELEMETRY_FOLDS}",
    f"$JS.API.STREAM.INFO.{topology.TELEMETRY_FOLDS_STREAM}",
    f"$JS.API.STREAM.MSG.GET.{topology.TELEMETRY_FOLDS_STREAM}",
)


class JetStreamFoldLog:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def append(self, record: bytes, *, expected_last: int) -> int:
        try:
            ack = await self._js.publish(
                subjects.TELEMETRY_FOLDS,
                record,
                stream=topology.TELEMETRY_FOLDS_STREAM,
                headers={"Nats-Expected-Last-Sequence": str(expected_last)},
            )
        except APIError as exc:
            if exc.err_code == WRONG_LAST_SEQUENCE:
                raise FoldConflict(None) from None
            raise
        return int(ack.seq)

    async def last(self) -> int:
        info = await self._js.stream_info(topology.TELEMETRY_FOLDS_STREAM)
        return int(info.state.last_seq)

    async def read(self, position: int) -> bytes | None:
        try:
            msg = await self._js.get_msg(topology.TELEMETRY_FOLDS_STREAM, seq=position)
        except NotFoundError:
            return None
        return bytes(msg.data or b"")


class KvSnapshots:
    """Entries of KV `telemetry`, listed from the bucket stream's subjects (see the registry's
    `KvRecordStore._list` for why not a watcher)."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self._js.key_value(topology.KV_TELEMETRY)
        return self._kv

    async def load(self) -> Sequence[tuple[str, bytes]]:
        kv = await self._bucket()
        prefix = f"$KV.{topology.KV_TELEMETRY}."
        info = await self._js.stream_info(f"KV_{topology.KV_TELEMETRY}", subjects_filter=prefix + ">")
        entries = []
        for subject in sorted(info.state.subjects or {}):
            key = subject.removeprefix(prefix)
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                continue  # deleted since
            if entry.value:
                entries.append((key, bytes(entry.value)))
        return entries

    async def save(self, key: str, value: bytes) -> None:
        kv = await self._bucket()
        await kv.put(key, value)

    async def delete(self, key: str) -> None:
        kv = await self._bucket()
        try:
            await kv.purge(key)
        except KeyNotFoundError:
            pass


class JetStreamAnnouncer:
    def __init__(self, js: JetStreamContext, outcomes: Outcomes, *, source: str) -> None:
        self._js = js
        self._outcomes = outcomes
        self._source = source

    async def event(self, event: Message, event_id: str) -> None:
        await self._outcomes.outcome(Outcome(status="applied", events=[(event, event_id)]))

    async def rollup(self, rollup: Message, subject: str, rollup_id: str) -> None:
        await bus.publish(self._js, wrap(rollup, source=self._source, id=rollup_id), subject)


class KvModelCatalog:
    """The registry's records by artifact digest: `artifact.<digest>` names the record's key (the
    registry's layout, `services/registry/adapters/nats_kv.py`); records are immutable."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._kv: KeyValue | None = None

    async def eval_outputs(self, digest: str) -> Mapping[str, OutputMoments] | None:
        try:
            if self._kv is None:
                self._kv = await self._js.key_value(topology.KV_MODELS)
            pointer = (await self._kv.get(f"artifact.{digest}")).value or b""
            key = pointer.decode()
            if not key.startswith(("version.", "variant.")) or "#" in key:
                return None  # an evaluation set's own digest, or a layout this reader does not know
            model = VariantRecord if key.startswith("variant.") else ModelVersionRecord
            record = model.model_validate_json((await self._kv.get(key)).value or b"")
        except KeyNotFoundError:
            return None
        except (NatsError, APIError, ValidationError, UnicodeDecodeError) as exc:
            log.warning("cannot read the registry's record", extra={"digest": digest, "error": str(exc)})
            return None
        if record.artifact.digest != digest or record.eval_outputs is None:
            return None
        return {str(name): moments for name, moments in record.eval_outputs.outputs.items()}
