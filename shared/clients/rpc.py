"""Calling an operation declared as an `Rpc`: send the request, read the typed reply, raise its error.

Raises, for every call:
    BusError: nobody answered (the service is not running) or no answer in time (transient).
    InvalidRequest: the request is larger than the server takes in one message (`max_payload`).
    shared.errors.*: the service answered with an error; the class is the code's (`error_for_code`).
"""

from __future__ import annotations

from typing import TypeVar, cast

from nats.aio.client import Client
from nats.errors import MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import ValidationError

from shared import subjects
from shared.bus import BusError, message_headers
from shared.errors import InvalidRequest, SlmopsError, error_for_code
from shared.messages.envelope import Message, encode, wrap
from shared.messages.rpc import Rpc, RpcReply, ServiceHealth

RequestT = TypeVar("RequestT", bound=Message)
ReplyT = TypeVar("ReplyT")


async def call(
    nc: Client,
    rpc: Rpc[RequestT, ReplyT],
    request: RequestT,
    *,
    source: str,
    timeout: float = 10.0,
    device_id: str | None = None,
) -> ReplyT:
    """Ask `rpc.service` and return the reply's result, validated as `rpc.reply`.

    `device_id`: a device calls a `per_device` operation on its own subject (`Rpc.device_subject`).
    """
    envelope = wrap(request, source=source)
    subject = rpc.device_subject(device_id) if device_id is not None and rpc.per_device else rpc.subject
    payload = encode(envelope)
    try:
        msg = await nc.request(subject, payload, timeout=timeout, headers=message_headers(envelope))
    except MaxPayloadError:
        raise InvalidRequest(
            f"the {rpc.operation} request is {len(payload)} bytes; the bus takes at most {nc.max_payload} in one "
            "message: send less at a time"
        ) from None
    except NoRespondersError:
        raise BusError(f"no {rpc.service} service is answering on {subject}; is it running?") from None
    except (TimeoutError, NatsTimeout):
        raise BusError(f"{rpc.service} did not answer {rpc.operation} within {timeout:.0f}s") from None
    try:
        reply = rpc.reply_model.model_validate_json(msg.data)
    except ValidationError as exc:
        raise SlmopsError(f"{rpc.service} sent a malformed {rpc.operation} reply: {exc}") from None
    if not reply.ok:
        error = reply.error
        raise error_for_code(error.code if error else "internal", error.message if error else "unknown error")
    return cast(ReplyT, reply.result)


async def health(nc: Client, service: str, *, timeout: float = 2.0) -> bool:
    """True if `service` answers its health ping as ready; any failure to answer is False."""
    try:
        msg = await nc.request(subjects.health(service), b"{}", timeout=timeout)
        reply = RpcReply[ServiceHealth].model_validate_json(msg.data)
    except Exception:  # no responders, timeout, garbage: all mean "not healthy"
        return False
    return reply.ok and reply.result is not None and reply.result.ready
