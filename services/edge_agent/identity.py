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
from shared.messages.device import DEVICE_ID_PATTERN

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
    device_class: str
    labels: dict[str, str] = Field(default_factory=dict)
    registry_key_id: str = Field(description="sha256 of the pinned registry key, to compare with the registry's")


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
