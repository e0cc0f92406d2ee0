"""The registry, reached the way any other system reaches it: request/reply and commands."""

from __future__ import annotations

from nats.aio.client import Client

from services.optimizer.errors import RegistryUnavailable, SourceNotFound
from shared import bus
from shared.messages.common import CommandOutcome
from shared.messages.registry import GetModel, ModelDetail, RegisterVariant

SOURCE = "optimizer"


class RegistryOverBus:
    def __init__(self, nc: Client, *, verdict_timeout: float = 300.0) -> None:
        self._nc = nc
        self._timeout = verdict_timeout

    async def get_model(self, name: str, ref: str) -> ModelDetail:
        try:
            result = await bus.request(self._nc, "registry", "get", GetModel(name=name, ref=ref), source=SOURCE)
        except bus.RemoteError as exc:
            if exc.code == "not_found":
                raise SourceNotFound(f"{name} {ref}: {exc.message}") from None
            raise RegistryUnavailable(str(exc)) from None
        except bus.BusError as exc:
            raise RegistryUnavailable(str(exc)) from None
        return ModelDetail.model_validate(result)

    async def register_variant(self, cmd: RegisterVariant) -> CommandOutcome:
        _, outcome = await bus.send_command(self._nc, cmd, source=SOURCE, wait=self._timeout)
        if outcome is None:
            raise RegistryUnavailable(
                f"the registry gave no verdict on variant {cmd.variant!r} in {self._timeout:.0f}s"
            )
        return outcome
