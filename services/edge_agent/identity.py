"""A device's identity as enrolment hands it over: who it is, its NATS credentials, and the
registry key it pins.

`slmops device enroll ID` writes one directory (`write`); the device runs `slmops agent
--identity DIR` (`load`). Everything a device trusts comes from here, once: the key that verifies
every artifact is never asked of the bus, where any responder could answer.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.edge_agent.errors import AgentError
from shared import signing
from shared.auth.authority import Authority
from shared.messages.common import NAME_PATTERN
from shared.messages.device import DEVICE_ID_PATTERN, Labels

IDENTITY_FILE = "device.json"
CREDENTIALS_FILE = "device.creds"
REGISTRY_KEY_FILE = "registry.pub"


class IdentityError(AgentError):
    """The identity directory is missing, incomplete or not one `slmops device enroll` wrote."""


class DeviceIdentity(BaseModel):
    """`device.json`: the enrolled id, class and labels (the rest of the directory is key material)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = 1
    device_id: str = Field(pattern=DEVICE_ID_PATTERN)
    device_class: str = Field(pattern=NAME_PATTERN)  # the rules of the hello it will send
    labels: Labels = Field(default_factory=dict)
    registry_key_id: str = Field(description="sha256 of the pinned registry key, to compare with the registry's")


def enroll(
    authority: Authority,
    directory: Path,
    *,
    device_id: str,
    device_class: str,
    labels: dict[str, str] | None = None,
    registry_key_pem: str,
) -> DeviceIdentity:
    """Issue the device its credentials and write its identity directory (`slmops device enroll`).

    Raises:
        ValueError: an id, class or labels the protocol does not allow (before anything is issued).
        shared.errors.Conflict: the device is enrolled already (revoke it first to re-enrol).
    """
    enrolled = DeviceIdentity(
        device_id=device_id,
        device_class=device_class,
        labels=labels or {},
        registry_key_id=signing.key_id(registry_key_pem),
    )
    credentials = authority.issue("device", device_id, device_class=device_class, labels=labels)
    write(directory, enrolled, credentials=credentials, registry_key_pem=registry_key_pem)
    return enrolled


def write(directory: Path, identity: DeviceIdentity, *, credentials: str, registry_key_pem: str) -> None:
    """Write the enrolment bundle (mode 0700; the credentials 0600)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    _write(directory / CREDENTIALS_FILE, credentials, 0o600)
    _write(directory / REGISTRY_KEY_FILE, registry_key_pem, 0o644)
    _write(directory / IDENTITY_FILE, identity.model_dump_json(indent=2), 0o644)


def load(directory: Path) -> tuple[DeviceIdentity, Path, str]:
    """The identity, the path of its credentials and the pinned registry key.

    Raises:
        IdentityError: naming the file that is missing or invalid.
    """
    try:
        identity = DeviceIdentity.model_validate_json((directory / IDENTITY_FILE).read_text())
        key = (directory / REGISTRY_KEY_FILE).read_text()
    except OSError as exc:
        raise IdentityError(
            f"{directory} is not an enrolled device's identity: {exc.strerror}: {exc.filename}"
        ) from None
    except ValidationError as exc:
        raise IdentityError(f"{directory / IDENTITY_FILE} is invalid: {exc}") from None
    creds = directory / CREDENTIALS_FILE
    if not creds.exists():
        raise IdentityError(f"{creds} is missing: enroll the device again (slmops device enroll --rotate)")
    return identity, creds, key


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)
