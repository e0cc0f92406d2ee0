"""The registry as its callers (the CLI, the optimizer, devices, other tools) see it."""

from __future__ import annotations

from nats.aio.client import Client

from shared import bus
from shared.clients.rpc import call
from shared.messages.common import CommandOutcome
from shared.messages.registry import (
    GET_ALIASES,
    GET_DOWNLOAD_URL,
    GET_MODEL,
    GET_PUBLIC_KEY,
    LIST_MODELS,
    AliasRecord,
    DownloadUrl,
    GetAliases,
    GetDownloadUrl,
    GetModel,
    GetPublicKey,
    ListModels,
    ModelDetail,
    ModelSummary,
    PublicKey,
    RegisterModel,
    RegisterVariant,
    SetAlias,
)


class RegistryClient:
    """Queries by request/reply and commands through the durable command stream.

    Args:
        nc: an open connection; the client does not close it.
        source: the envelope `source` of everything this client sends (e.g. `cli`, `device:<id>`).
        timeout: seconds to wait for a query's answer.
        device_id: set by a device: it asks for download URLs on its own subject, and the registry
            answers only for what that device's desired state names.

    Raises (every query): `BusError` when the registry does not answer, `shared.errors.NotFound`
    for a name, version, alias or digest it does not know, `InvalidRequest` for a malformed request,
    `TransientError` when the registry could not serve it now (S3 down), and a plain `SlmopsError`
    when it failed (`internal`) or answered something malformed. Each carries the code the registry
    answered with in `remote_code`.
    """

    def __init__(self, nc: Client, *, source: str, timeout: float = 10.0, device_id: str | None = None) -> None:
        self._nc = nc
        self._source = source
        self._timeout = timeout
        self._device_id = device_id

    async def list_models(self, name: str | None = None) -> list[ModelSummary]:
        return await call(self._nc, LIST_MODELS, ListModels(name=name), source=self._source, timeout=self._timeout)

    async def get_model(self, name: str, ref: str = "latest") -> ModelDetail:
        """A version by version string, alias or `latest`, with its variants and aliases."""
        request = GetModel(name=name, ref=ref)
        return await call(self._nc, GET_MODEL, request, source=self._source, timeout=self._timeout)

    async def aliases(self, name: str) -> list[AliasRecord]:
        return await call(self._nc, GET_ALIASES, GetAliases(name=name), source=self._source, timeout=self._timeout)

    async def download_url(self, digest: str) -> DownloadUrl:
        """A short-lived presigned URL for a registered artifact or evaluation set, with its signature."""
        request = GetDownloadUrl(digest=digest)
        return await call(
            self._nc, GET_DOWNLOAD_URL, request, source=self._source, timeout=self._timeout, device_id=self._device_id
        )

    async def public_key(self) -> PublicKey:
        return await call(self._nc, GET_PUBLIC_KEY, GetPublicKey(), source=self._source, timeout=self._timeout)

    async def submit(
        self, command: RegisterModel | RegisterVariant | SetAlias, *, wait: float | None = None
    ) -> tuple[str, CommandOutcome | None]:
        """Queue a command durably; with `wait`, also wait that long for the registry's verdict.

        Returns:
            The command id, and the outcome if it arrived in time (None: still queued or running).
        """
        return await bus.send_command(self._nc, command, source=self._source, wait=wait)
