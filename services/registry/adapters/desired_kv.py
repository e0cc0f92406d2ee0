"""`DeviceGrants` from the `desired` KV bucket: a device may download what its desired state names."""

from __future__ import annotations

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from shared.messages.device import DesiredState


def grants_of(value: bytes | None) -> frozenset[str]:
    """The digests a stored desired state names; nothing for a deleted or unreadable one."""
    if not value:
        return frozenset()
    try:
        desired = DesiredState.model_validate_json(value)
    except ValidationError:
        return frozenset()
    return frozenset({desired.digest} | ({desired.smoke_input.digest} if desired.smoke_input else set()))


class KvDeviceGrants:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def downloadable(self, device_id: str) -> frozenset[str]:
        try:
            entry = await self._kv.get(device_id)
        except KeyNotFoundError:
            return frozenset()
        return grants_of(entry.value)
