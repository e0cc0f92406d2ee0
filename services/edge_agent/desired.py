"""What a device is asked to run: a desired state and the KV revision it was written at.

The agent's link, the fleet simulator's connections and the install state machine all speak of
this one type. The revision, assigned by the KV server, identifies the request: a device echoes it
in every status, and a higher revision always wins over the install of a lower one.

A desired state may carry application settings (`config`) for the device's own applications: they
serve with its model (`AppConfig`), and every status names them by digest (`config_digest`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.messages import common
from shared.messages.device import DesiredState

DigestOf = Callable[[dict[str, Any]], str]


@dataclass(frozen=True, kw_only=True, slots=True)
class Desired:
    """A desired state and the KV revision it was written at (the device echoes the revision).

    Attributes:
        config_digest: sha256 of `state.config` (None: no settings), computed once here so an
            install's statuses do not hash the settings again; left out, it is computed.
    """

    state: DesiredState
    revision: int
    config_digest: str | None = None

    def __post_init__(self) -> None:
        if self.config_digest is None and self.state.config is not None:
            object.__setattr__(self, "config_digest", common.config_digest(self.state.config))

    @classmethod
    def from_entry(cls, value: bytes, *, revision: int | None, digest_of: DigestOf = common.config_digest) -> Desired:
        """The desired state stored in a KV entry.

        Args:
            value: the entry's bytes (`DesiredState` JSON).
            revision: the entry's revision (None, from a client that did not say, counts as 0).
            digest_of: how the settings' digest is computed (the simulator's remembers the digests
                of settings it has seen: ten thousand devices get the same ones).

        Raises:
            pydantic.ValidationError: the value is not a valid desired state (the protocol's rule:
                ignore it and keep serving).
        """
        state = DesiredState.model_validate_json(value)
        digest = digest_of(state.config) if state.config is not None else None
        return cls(state=state, revision=int(revision or 0), config_digest=digest)


@dataclass(frozen=True, kw_only=True, slots=True)
class AppConfig:
    """The application settings that serve with a model, and their digest (both None: no settings)."""

    values: Mapping[str, Any] | None = None
    digest: str | None = None

    @classmethod
    def of(cls, values: Mapping[str, Any] | None) -> AppConfig:
        return cls(values=values, digest=common.config_digest(values) if values is not None else None)


NO_CONFIG = AppConfig()
