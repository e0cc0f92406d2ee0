"""Setting up the platform's identities for a deployment: what `slmops up`, `slmops stack init`,
compose's `auth-init` and the test fixtures run before anything connects."""

from __future__ import annotations

from pathlib import Path

from shared.auth.authority import Authority

ADMIN = "platform"
OPERATOR = "cli"
SIMULATOR = "fleet"


def prepare(directory: Path, services: list[str]) -> Authority:
    """The authority under `directory` with current credentials for admin, the CLI's operator, the
    fleet simulator, the system user and each of `services` (re-signed with today's declarations,
    same keys), and the server's configuration written."""
    from shared.discovery import load_service

    authority = Authority.create(directory)
    authority.issue("admin", ADMIN, keep_key=True)
    authority.issue("operator", OPERATOR, keep_key=True)
    authority.issue("simulator", SIMULATOR, keep_key=True)
    authority.system_credentials()
    for name in services:
        authority.issue("service", name, access=load_service(name)().access(), keep_key=True)
    authority.write_server_config()
    return authority
