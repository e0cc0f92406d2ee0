"""`slmops auth init|issue|list`: the deployment's NATS identities (`shared.auth`).

`slmops up` does `init` by itself; docker-compose runs it once in its `auth-init` container. Devices
are enrolled with `slmops device enroll`, which uses the same keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from shared.cli.common import JsonOption, authority_at, console, fail, print_json

if TYPE_CHECKING:
    from shared.auth.authority import Authority

auth_app = typer.Typer(help="NATS identities: the trust root, service and operator credentials.", no_args_is_help=True)


@auth_app.command("init")
def init(
    directory: Path | None = typer.Option(None, "--dir", help="Where the keys live (default: <home>/auth)."),
    services: str | None = typer.Option(
        None, help="Comma-separated services to issue credentials for (default: every installed one)."
    ),
    server_dir: Path | None = typer.Option(
        None,
        help="Also write the server's part (operator JWT, nats-auth.conf) here, for a nats-server that "
        "must not see the keys (docker-compose mounts it into the nats container).",
    ),
    resolver_dir: Path | None = typer.Option(
        None, help="Where the server keeps account JWTs, as the server sees it (default: <dir>/resolver)."
    ),
) -> None:
    """Create the operator, accounts and signing key once; (re)issue admin, operator, simulator and
    service credentials with today's permissions (same keys). Idempotent."""
    from shared.auth import bootstrap
    from shared.discovery import service_names
    from shared.settings import load_settings

    target = directory or load_settings().auth_dir
    names = [s.strip() for s in services.split(",") if s.strip()] if services is not None else service_names()
    authority = bootstrap.prepare(target, names)
    if server_dir is not None:
        authority.export_server_part(server_dir, resolver_dir=resolver_dir)
    console.print(f"identities in {target}: admin, operator, simulator, services {', '.join(names) or '(none)'}")


@auth_app.command("issue")
def issue(
    name: str = typer.Argument(..., help="The identity's name ([A-Za-z0-9_-], max 64)."),
    out: Path = typer.Option(..., help="Where to write its .creds file (mode 0600)."),
    rotate: bool = typer.Option(False, help="Replace an existing identity's credentials (the old are revoked)."),
) -> None:
    """Issue operator credentials for a person or another system (send commands, call operations,
    read state; its replies arrive under _INBOX.operator.NAME, which its NATS client must set)."""
    from shared.errors import SlmopsError

    authority = _authority()
    try:
        creds = authority.issue("operator", name, rotate=rotate)
    except SlmopsError as exc:
        fail(str(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.touch(mode=0o600)
    out.write_text(creds)
    console.print(f"operator {name}: {out} (connect with inbox prefix _INBOX.operator.{name})")


@auth_app.command("list")
def list_identities(
    role: str | None = typer.Option(None, help="Only this role: device, service, operator, admin, simulator."),
    as_json: bool = JsonOption,
) -> None:
    """Every identity issued in this deployment (devices included), and whether it is revoked."""
    from shared.auth.permissions import ROLES

    if role is not None and role not in ROLES:
        fail(f"--role must be one of {', '.join(ROLES)}, got {role!r}", code=2)
    found = [i.__dict__ for i in _authority().identities() if role is None or i.role == role]
    if as_json:
        print_json(found)
        return
    for i in found:
        state = f"revoked {i['revoked_at']}" if i["revoked_at"] else "active"
        console.print(f"{i['role']:9} {i['name']:24} issued {i['issued_at']}  {state}")


def _authority() -> Authority:
    from shared.settings import load_settings

    return authority_at(load_settings().auth_dir)
