"""The registry, reached the way any other system reaches it: its typed client over the bus."""

from __future__ import annotations

from services.optimizer.errors import RegistryUnavailable, SourceNotFound
from shared.clients import RegistryClient
from shared.errors import NotFound, TransientError
from shared.messages.common import CommandOutcome
from shared.messages.registry import ModelDetail, RegisterVariant


class RegistryOverBus:
    """The optimizer's `Registry` port, with the registry's answers mapped to the optimizer's errors."""

    def __init__(self, client: RegistryClient, *, verdict_timeout: float = 300.0) -> None:
        self._client = client
        self._timeout = verdict_timeout

    async def get_model(self, name: str, ref: str) -> ModelDetail:
        try:
            return await self._client.get_model(name, ref)
        except NotFound as exc:
            raise SourceNotFound(f"{name} {ref}: {exc}") from None
        except TransientError as exc:
            raise RegistryUnavailable(str(exc)) from None

    async def register_variant(self, cmd: RegisterVariant) -> CommandOutcome:
        try:
            _, outcome = await self._client.submit(cmd, wait=self._timeout)
        except TransientError as exc:
            raise RegistryUnavailable(str(exc)) from None
        if outcome is None:
            raise RegistryUnavailable(
                f"the registry gave no verdict on variant {cmd.variant!r} in {self._timeout:.0f}s"
            )
        return outcome
