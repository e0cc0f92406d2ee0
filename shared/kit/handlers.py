"""The typed functions the kit subscribes with FastStream, one per declaration.

FastStream documents a subscriber's payload (in the AsyncAPI document) from its handler's parameter
annotation, and validates the decoded message against it. So each handler is built here with the
wire model of what it accepts as that annotation: a closure over a class chosen at run time. This
module must not use `from __future__ import annotations`: the annotation has to be the class itself,
evaluated when the function is defined, not a string naming a local variable.
"""

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, Union

from faststream.nats.annotations import NatsMessage
from pydantic import Field

from shared.messages.envelope import Envelope, Message, wire_model
from shared.outcomes import Outcome


def payload_annotation(types: Sequence[type[Message]]) -> Any:
    """The wire model of one message type, or the union of several told apart by `type` (or, for
    versions of one type, by their `schema_version`: a plain union, each member pinning its own)."""
    models = tuple(wire_model(t) for t in types)
    if len(models) == 1:
        return models[0]
    if len({t.TYPE for t in types}) < len(types):
        return Union[models]  # noqa: UP007 (a runtime tuple of classes)
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 (a runtime tuple of classes)


def durable_handler(
    types: Sequence[type[Message]], dispatch: Mapping[type[Message], Callable[[Message, str], Awaitable[Outcome]]]
) -> Callable[..., Awaitable[Outcome]]:
    """A handler for a durable consumer: calls the use case registered for the payload's type."""
    annotation = payload_annotation(types)

    async def handle(envelope: annotation) -> Outcome:  # type: ignore[valid-type]
        typed: Envelope[Any] = envelope
        return await dispatch[type(typed.data)](typed.data, typed.id)

    return handle


def request_handler(
    request: type[Message], answer: Callable[[Message], Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    """A handler for one request/reply operation: the use case's result, for the policy to send."""
    annotation = wire_model(request)

    async def handle(envelope: annotation) -> Any:  # type: ignore[valid-type]
        typed: Envelope[Any] = envelope
        return await answer(typed.data)

    return handle


def device_request_handler(
    request: type[Message], subject: str, answer: Callable[[Message, str | None], Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    """A handler for an operation devices call on `<subject>.<device id>`: the use case gets the id
    from the subject (only that device's credentials may publish there), or None on `subject`."""
    annotation = wire_model(request)

    async def handle(envelope: annotation, message: NatsMessage) -> Any:  # type: ignore[valid-type]
        typed: Envelope[Any] = envelope
        caller = message.raw_message.subject[len(subject) + 1 :] or None
        return await answer(typed.data, caller)

    return handle
