"""Request/reply: each operation declared once, as the request it takes and the reply it gives.

A request is an envelope like any other message, sent with core NATS request/reply to
`slmops.rpc.<request type>` (type `registry.get` → subject `slmops.rpc.registry.get`, answered by
the `registry` service's queue group). Every answer is an `RpcReply`: `ok` with the `result`, or an
`error` whose `code` is one of the platform's (`shared.errors.RPC_ERRORS`). The service kit
answers an `Rpc` and the typed clients (`shared.clients`) call it, so both ends read the same
declaration.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, Literal, TypeVar

from pydantic import Field

from shared import subjects
from shared.messages.common import Frozen
from shared.messages.envelope import Message

ResultT = TypeVar("ResultT")
RequestT = TypeVar("RequestT", bound=Message)
ReplyT = TypeVar("ReplyT")


class RpcError(Frozen):
    code: str = Field(description="one of the platform's error codes: invalid_request, not_found, conflict, ...")
    message: str


class RpcReply(Frozen, Generic[ResultT]):
    """What every request/reply answers: a result or an error, never both."""

    schema_version: Literal[1] = 1
    ok: bool
    result: ResultT | None = None
    error: RpcError | None = None


class ServiceHealth(Frozen):
    """The answer to `slmops.rpc.<service>.health`: ready once the service can handle messages."""

    service: str
    ready: bool


@dataclass(frozen=True, eq=False)
class Rpc(Generic[RequestT, ReplyT]):
    """One request/reply operation.

    Args:
        request: the request payload; its `TYPE` is `<service>.<operation>`.
        reply: the type of the reply's `result` (a model, or e.g. `list[ModelSummary]`).
        per_device: devices call it on `<subject>.<device id>` (`device_subject`), a subject only that
            device's credentials may publish to, so the service knows which device asks.
    """

    request: type[RequestT]
    reply: type[ReplyT]
    per_device: bool = False

    def __post_init__(self) -> None:
        service, dot, operation = self.request.TYPE.partition(".")
        if not dot or not operation or "." in operation:
            raise TypeError(f"request type {self.request.TYPE!r} must be '<service>.<operation>'")

    @property
    def service(self) -> str:
        return self.request.TYPE.partition(".")[0]

    @property
    def operation(self) -> str:
        return self.request.TYPE.partition(".")[2]

    @property
    def subject(self) -> str:
        return subjects.rpc(self.service, self.operation)

    def device_subject(self, device_id: str) -> str:
        """Where device `device_id` calls a `per_device` operation."""
        if not self.per_device:
            raise TypeError(f"{self.request.TYPE} is not called per device")
        return subjects.device_rpc(self.subject, device_id)

    @cached_property
    def reply_model(self) -> type[RpcReply[Any]]:
        """`RpcReply` with its `result` typed as `reply`: validates a reply off the wire."""
        return RpcReply[self.reply]  # type: ignore[name-defined]

    def answer(self, result: ReplyT) -> bytes:
        """The wire form of a successful reply."""
        return self.reply_model(ok=True, result=result).model_dump_json().encode()


def error_reply(code: str, message: str) -> bytes:
    """The wire form of a failed reply (the same for every operation)."""
    return RpcReply[Any](ok=False, error=RpcError(code=code, message=message)).model_dump_json().encode()
