"""One error root for the platform, with the two branches every handler acts on.

    SlmopsError                    anything SLMOps raises on purpose; the CLI catches only this
    ├── CallerError                the input is wrong: rejected, never retried (a command goes to the DLQ)
    │   ├── InvalidRequest         not a valid message or argument (`shared.messages.InvalidMessage`)
    │   ├── NotFound               no such model, version, object, profile...
    │   ├── Conflict               taken already, by other content
    │   └── Forbidden              the caller may not have this (a device asking for another's model)
    ├── TransientError             a dependency is down, slow or raced: retry later (a command is nacked)
    └── each service's tree        `services/<service>/errors.py`, its classes under these branches

Anything that is not a `SlmopsError` is a programming error: it propagates (a command is retried a
bounded number of times, then dead-lettered with the traceback's message).

Requests answer errors with a code (`RpcError.code`), one per branch above, so a client in any
language can tell "fix your request" from "try again". `wire_code` gives the code for an exception
and `error_for_code` the exception a client raises for a code: the one mapping, both directions.
"""

from __future__ import annotations


class SlmopsError(Exception):
    """Base of every error SLMOps raises on purpose."""

    code = "internal"
    # The code a service answered with, when this error came over the bus (None: raised here).
    remote_code: str | None = None


class CallerError(SlmopsError):
    """The caller's input is wrong; retrying the same input fails the same way."""

    code = "rejected"


class InvalidRequest(CallerError):
    """Not a valid message, field or argument; the message names it."""

    code = "invalid_request"


class NotFound(CallerError):
    """What the input names does not exist."""

    code = "not_found"


class Conflict(CallerError):
    """What the input names exists already, with other content."""

    code = "conflict"


class Forbidden(CallerError):
    """The caller is who it says (its credentials prove it) but may not have what it asks for."""

    code = "forbidden"


class TransientError(SlmopsError):
    """A dependency (NATS, S3, another service) is down, timed out or raced; the same input may succeed later."""

    code = "unavailable"


# The codes a request may be answered with, and what a client raises for each.
RPC_ERRORS: dict[str, type[SlmopsError]] = {
    cls.code: cls for cls in (SlmopsError, CallerError, InvalidRequest, NotFound, Conflict, Forbidden, TransientError)
}


def wire_code(exc: BaseException) -> str:
    """The code an error is answered with: that of its nearest branch in `RPC_ERRORS`.

    A service's own classes inherit their branch's code, so a client needs to know only the
    platform's codes; anything that is not a `SlmopsError` is `internal`.
    """
    for cls in type(exc).__mro__:
        code = cls.__dict__.get("code")
        if code in RPC_ERRORS and RPC_ERRORS[code] is cls:
            return str(code)
    return SlmopsError.code


def error_for_code(code: str, message: str) -> SlmopsError:
    """The exception a client raises for an error reply (an unknown code: a plain `SlmopsError`),
    with the service's message and, in `remote_code`, the code it answered with."""
    error = RPC_ERRORS.get(code, SlmopsError)(message)
    error.remote_code = code
    return error
