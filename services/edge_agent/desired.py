"""What a device is asked to run: a desired state and the KV revision it was written at.

The agent's link, the fleet simulator's connections and the install state machine all speak of
this one type. The revision, assigned by the KV server, identifies the request: a device echoes it
in every status, and a higher revision always wins over the install of a lower one.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.messages.device import DesiredState


@dataclass(frozen=True, kw_only=True, slots=True)
class Desired:
    """A desired state and the KV revision it was written at (the device echoes the revision)."""

    state: DesiredState
    revision: int

    @classmethod
    def from_entry(cls, value: bytes, *, revision: int | None) -> Desired:
        """The desired state stored in a KV entry.

        Args:
            value: the entry's bytes (`DesiredState` JSON).
            revision: the entry's revision (None, from a client that did not say, counts as 0).

        Raises:
            pydantic.ValidationError: the value is not a valid desired state (the protocol's rule:
                ignore it and keep serving).
        """
        return cls(state=DesiredState.model_validate_json(value), revision=int(revision or 0))
