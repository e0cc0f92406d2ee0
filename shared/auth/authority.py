"""The platform's trust root on disk: the NATS operator, its accounts, and the credentials issued.

`Authority.create(directory)` makes (once) an operator key, a system account (the server's own
traffic, used only to push account updates) and the `SLMOPS` account, whose signing key signs
every user. Each identity's credentials are a user JWT carrying its permissions
(`shared.auth.permissions`) plus its seed, in a `.creds` file. Revoking an identity adds its public
key to the account's revocations, re-signs the account and pushes it to the running server
(`$SYS.REQ.CLAIMS.UPDATE`), which disconnects it at once; the file copy makes the revocation
survive a restart (the server preloads it).

Layout (mode 0700; every secret 0600):
    operator.nk system.nk account.nk signing.nk    seeds (secret)
    operator.jwt system.jwt account.jwt            the chain the server trusts
    creds/<role>-<name>.creds                      issued credentials (admin, operator, services, ...)
    identities/<role>-<name>.json                  what was issued to whom, and when it was revoked
    nats-auth.conf                                 the server's configuration for this operator
    resolver/                                      the server's account store (when it runs here)

Key handling and rotation are in docs/SECURITY.md.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.auth import permissions, tokens
from shared.auth.permissions import Permissions, Role, ServiceAccess
from shared.errors import Conflict, InvalidRequest, NotFound

ACCOUNT = "SLMOPS"
CLAIMS_UPDATE = "$SYS.REQ.CLAIMS.UPDATE"
SYSTEM_ACCOUNT = "SYS"
NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_UNLIMITED = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
}
_JETSTREAM = {
    "mem_storage": -1,
    "disk_storage": -1,
    "streams": -1,
    "consumer": -1,
    "max_ack_pending": -1,
    "mem_max_stream_bytes": -1,
    "disk_max_stream_bytes": -1,
    "max_bytes_required": False,
}


@dataclass(frozen=True)
class Identity:
    """One issued identity, as recorded in `identities/`."""

    role: Role
    name: str
    public_key: str
    issued_at: str
    revoked_at: str | None = None
    device_class: str | None = None
    labels: dict[str, str] | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class Authority:
    """Keys and issued credentials under one directory; see the module docstring for the layout."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    # --- the chain -----------------------------------------------------------------------------

    @classmethod
    def existing(cls, directory: Path) -> Authority:
        """The authority in `directory`, which must have been created already.

        Raises:
            NotFound: there are no deployment keys there.
        """
        if not (directory / "account.jwt").exists():
            raise NotFound(
                f"no deployment keys in {directory}: run this where the platform was set up "
                "(`slmops up` or `slmops auth init` creates them)"
            )
        return cls(directory)

    @classmethod
    def create(cls, directory: Path) -> Authority:
        """Load the authority in `directory`, creating its keys and JWTs the first time."""
        authority = cls(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        operator = authority._key("operator", "operator")
        system = authority._key("system", "account")
        account = authority._key("account", "account")
        authority._key("signing", "account")
        if not (directory / "operator.jwt").exists():
            _write(
                directory / "operator.jwt",
                tokens.encode(
                    subject=operator.public,
                    name="slmops",
                    nats={"type": "operator", "system_account": system.public},
                    issuer=operator,
                ),
            )
        if not (directory / "system.jwt").exists():
            _write(directory / "system.jwt", authority._account_jwt(system, SYSTEM_ACCOUNT, jetstream=False))
        if not (directory / "account.jwt").exists():
            _write(directory / "account.jwt", authority._account_jwt(account, ACCOUNT, jetstream=True))
        (directory / "creds").mkdir(exist_ok=True, mode=0o700)
        (directory / "identities").mkdir(exist_ok=True, mode=0o700)
        return authority

    @property
    def account_public_key(self) -> str:
        return self._key("account", "account").public

    def account_jwt(self) -> str:
        return (self.directory / "account.jwt").read_text().strip()

    def server_config(self, *, resolver_dir: Path | None = None) -> str:
        """The nats-server configuration that trusts this operator (include it, or pass `-c`)."""
        system = self._key("system", "account").public
        account = self.account_public_key
        resolver = resolver_dir or self.directory / "resolver"
        return (
            "# Written by slmops (shared/auth/authority.py): trust the platform's NATS operator.\n"
            f'operator: "{self.directory / "operator.jwt"}"\n'
            f'system_account: "{system}"\n'
            f'resolver: {{ type: full, dir: "{resolver}", allow_delete: false, interval: "2m" }}\n'
            "resolver_preload: {\n"
            f'  {system}: "{(self.directory / "system.jwt").read_text().strip()}"\n'
            f'  {account}: "{self.account_jwt()}"\n'
            "}\n"
        )

    def write_server_config(self, path: Path | None = None, *, resolver_dir: Path | None = None) -> Path:
        target = path or self.directory / "nats-auth.conf"
        _write(target, self.server_config(resolver_dir=resolver_dir))
        return target

    def export_server_part(self, directory: Path, *, resolver_dir: Path | None = None) -> Path:
        """Write what a nats-server needs, and nothing secret, into `directory` (a separate volume
        in compose): the operator JWT and a configuration naming it there."""
        directory.mkdir(parents=True, exist_ok=True)
        _write(directory / "operator.jwt", (self.directory / "operator.jwt").read_text(), mode=0o644)
        text = self.server_config(resolver_dir=resolver_dir).replace(
            str(self.directory / "operator.jwt"), str(directory / "operator.jwt")
        )
        _write(directory / "nats-auth.conf", text, mode=0o644)
        return directory / "nats-auth.conf"

    # --- issuing ---------------------------------------------------------------------------------

    def issue(
        self,
        role: Role,
        name: str,
        *,
        access: ServiceAccess | None = None,
        device_class: str | None = None,
        labels: dict[str, str] | None = None,
        rotate: bool = False,
        keep_key: bool = False,
    ) -> str:
        """Issue `role`/`name` credentials and record the identity; returns the `.creds` text.

        Args:
            access: a service's declared bus use (required for `service`, which it defines).
            rotate: replace an active identity's credentials (the old key is revoked).
            keep_key: re-sign the existing key with current permissions (services at each start).

        Raises:
            InvalidRequest: a name that cannot be a subject token, or a service without `access`.
            Conflict: the identity is active and neither `rotate` nor `keep_key` was given.
        """
        if not NAME.fullmatch(name):
            raise InvalidRequest(f"{role} name {name!r} must match [A-Za-z0-9_-]{{1,64}}")
        if role == "service":
            if access is None or access.name != name:
                raise InvalidRequest(f"service {name!r}: its credentials need its declared access")
            grants = permissions.for_service(access)
        else:
            grants = permissions.for_role(role, name)
        existing = self.identity(role, name)
        user: tokens.KeyPair | None = None
        if existing and existing.active:
            if keep_key:
                user = self._issued_key(role, name)
            elif rotate:
                self.revoke(role, name)
            else:
                raise Conflict(
                    f"{role} {name!r} is already enrolled (since {existing.issued_at}); "
                    "use --rotate to issue new credentials and revoke the old ones"
                )
        user = user or tokens.KeyPair.create("user")
        creds = tokens.credentials(self._user_jwt(role, name, user, grants), user)
        _write(self._creds_path(role, name), creds)
        self._record(
            Identity(
                role=role,
                name=name,
                public_key=user.public,
                issued_at=_now(),
                device_class=device_class,
                labels=labels,
            )
        )
        return creds

    def system_credentials(self) -> Path:
        """Credentials of a user of the system account, allowed only to push account updates."""
        path = self.directory / "creds" / "system.creds"
        if not path.exists():
            system = self._key("system", "account")
            user = tokens.KeyPair.create("user")
            grants = Permissions(publish=(CLAIMS_UPDATE,), subscribe=("_INBOX.>",))
            nats = {"type": "user", "subs": -1, "data": -1, "payload": -1, **grants.claims()}
            token = tokens.encode(subject=user.public, name="system", nats=nats, issuer=system)
            _write(path, tokens.credentials(token, user))
        return path

    def creds_path(self, role: Role, name: str) -> Path:
        """Where `issue` wrote `role`/`name`'s credentials."""
        return self._creds_path(role, name)

    def identity(self, role: Role, name: str) -> Identity | None:
        path = self._identity_path(role, name)
        if not path.exists():
            return None
        return Identity(**json.loads(path.read_text()))

    def identities(self, role: Role | None = None) -> list[Identity]:
        found = [Identity(**json.loads(p.read_text())) for p in sorted((self.directory / "identities").glob("*.json"))]
        return [i for i in found if role is None or i.role == role]

    # --- revoking --------------------------------------------------------------------------------

    def revoke(self, role: Role, name: str) -> Identity:
        """Revoke `role`/`name`: its key goes on the account's revocation list, re-signed and written
        here (the next server start preloads it); `shared.auth.updates.push_account` delivers it to
        a running server.

        Raises:
            NotFound: no such identity was issued.
            Conflict: it is revoked already.
        """
        existing = self.identity(role, name)
        if existing is None:
            raise NotFound(f"no {role} {name!r} was enrolled")
        if not existing.active:
            raise Conflict(f"{role} {name!r} was revoked already (at {existing.revoked_at})")
        claims = tokens.decode_claims(self.account_jwt())
        revocations = dict(claims["nats"].get("revocations") or {})
        revocations[existing.public_key] = int(time.time())
        account = self._key("account", "account")
        _write(
            self.directory / "account.jwt", self._account_jwt(account, ACCOUNT, jetstream=True, revocations=revocations)
        )
        revoked = Identity(**{**existing.__dict__, "revoked_at": _now()})
        self._record(revoked)
        self._creds_path(role, name).unlink(missing_ok=True)
        return revoked

    # --- internals ------------------------------------------------------------------------------

    def _account_jwt(
        self, account: tokens.KeyPair, name: str, *, jetstream: bool, revocations: dict[str, int] | None = None
    ) -> str:
        nats: dict[str, Any] = {
            "type": "account",
            "limits": _UNLIMITED | (_JETSTREAM if jetstream else {}),
            "default_permissions": {"pub": {}, "sub": {}},
        }
        if name == ACCOUNT:
            nats["signing_keys"] = [self._key("signing", "account").public]
        if revocations:
            nats["revocations"] = revocations
        return tokens.encode(subject=account.public, name=name, nats=nats, issuer=self._key("operator", "operator"))

    def _user_jwt(self, role: Role, name: str, user: tokens.KeyPair, grants: Permissions) -> str:
        nats: dict[str, Any] = {
            "type": "user",
            "issuer_account": self.account_public_key,
            "tags": [f"{permissions.ROLE_TAG}{role}"],
            "subs": -1,
            "data": -1,
            "payload": -1,
            **grants.claims(),
        }
        return tokens.encode(subject=user.public, name=name, nats=nats, issuer=self._key("signing", "account"))

    def _key(self, name: str, role: tokens.Role) -> tokens.KeyPair:
        path = self.directory / f"{name}.nk"
        if path.exists():
            return tokens.KeyPair.from_seed(path.read_text().strip())
        key = tokens.KeyPair.create(role)
        _write(path, key.seed)
        return key

    def _issued_key(self, role: Role, name: str) -> tokens.KeyPair | None:
        path = self._creds_path(role, name)
        if not path.exists():
            return None
        return tokens.KeyPair.from_seed(tokens.read_credentials_seed(path.read_text()))

    def _creds_path(self, role: Role, name: str) -> Path:
        return self.directory / "creds" / f"{role}-{name}.creds"

    def _identity_path(self, role: Role, name: str) -> Path:
        return self.directory / "identities" / f"{role}-{name}.json"

    def _record(self, identity: Identity) -> None:
        _write(self._identity_path(identity.role, identity.name), json.dumps(identity.__dict__, indent=2))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Write atomically, by default readable by the owner only (the files here are secrets or
    trust anchors)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    tmp.replace(path)
