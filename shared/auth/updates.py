"""Delivering an account update (a revocation) to the running nats-server."""

from __future__ import annotations

import asyncio
import json

import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from shared.auth.authority import CLAIMS_UPDATE, Authority
from shared.errors import TransientError

CONNECT_SECONDS = 10.0


class PushFailed(TransientError):
    """The running server did not take the account update (it is down, or refused it)."""


async def push_account(url: str, authority: Authority) -> None:
    """Deliver the account's current JWT (e.g. with a new revocation) to the running server, which
    applies it at once: revoked users are disconnected.

    Raises:
        PushFailed: the server is unreachable or refused the update.
    """
    try:
        # Bounded: nats-py retries a refused first connection for minutes whatever its options, and
        # a server that is down is an answer here (the revocation waits on disk for its next start).
        nc = await asyncio.wait_for(
            nats.connect(url, user_credentials=str(authority.system_credentials()), connect_timeout=5),
            timeout=CONNECT_SECONDS,
        )
    except Exception as exc:
        raise PushFailed(f"cannot reach NATS at {url} to push the account update: {exc}") from None
    try:
        reply = await nc.request(CLAIMS_UPDATE, authority.account_jwt().encode(), timeout=5)
    except (NoRespondersError, NatsTimeout) as exc:
        raise PushFailed(f"the server did not answer the account update: {type(exc).__name__}") from None
    finally:
        await nc.close()
    answer = json.loads(reply.data)
    if "error" in answer:
        raise PushFailed(f"the server refused the account update: {answer['error']}")
