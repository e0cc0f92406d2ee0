"""Records to and from their stored JSON, the one way both record stores do it.

A value that no longer reads as its model (edited by hand, written by an older registry, or by a
bug) is a `BrokenRecord` naming its key, never a bare `ValidationError`: the request that touched
it is answered with that error instead of a traceback, and the operator learns which key to repair.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from services.registry.errors import BrokenRecord

R = TypeVar("R", bound=BaseModel)


def load(raw: bytes | str, model: type[R], *, key: str) -> R:
    """`raw` as a `model`.

    Raises:
        BrokenRecord: the value is not a valid `model`.
    """
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise BrokenRecord(key=key, problem=f"{exc.error_count()} error(s), first at {where}: {first['msg']}") from None


def dump(record: BaseModel) -> bytes:
    """The bytes a record is stored as."""
    return record.model_dump_json().encode()
