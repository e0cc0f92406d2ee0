"""NATS JWTs and `.creds` files, signed with nkeys.

NATS decentralized auth is a chain of ed25519 keys: an operator signs accounts, an account signs
users, and the server, which trusts only the operator, checks a connecting user's chain and its
permissions from the user JWT itself. So a device's credentials can be issued offline, and
nothing about a device is stored in the server's configuration.

The claims format is nats-io/jwt v2's. We encode it here, on the nats-io `nkeys` library, rather
than depend on the one Python port of nats-io/jwt (`nats-jwt`, which says it is untested and pins
pytz < 2025); the three claim types we issue are small, and the real nats-server validates every
token in the tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Literal

import nkeys

Role = Literal["operator", "account", "user"]
_PREFIX: dict[Role, int] = {
    "operator": nkeys.PREFIX_BYTE_OPERATOR,
    "account": nkeys.PREFIX_BYTE_ACCOUNT,
    "user": nkeys.PREFIX_BYTE_USER,
}
_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}


@dataclass(frozen=True)
class KeyPair:
    """An nkey: `seed` (secret, 'S…') and `public` ('O…', 'A…' or 'U…')."""

    seed: str
    public: str

    @classmethod
    def create(cls, role: Role) -> KeyPair:
        seed = nkeys.encode_seed(os.urandom(32), _PREFIX[role]).decode()
        return cls.from_seed(seed)

    @classmethod
    def from_seed(cls, seed: str) -> KeyPair:
        public = nkeys.from_seed(seed.encode()).public_key.decode()
        return cls(seed=seed, public=public)

    def sign(self, data: bytes) -> bytes:
        return bytes(nkeys.from_seed(self.seed.encode()).sign(data))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode(*, subject: str, name: str, nats: dict[str, Any], issuer: KeyPair, issued_at: int | None = None) -> str:
    """A signed JWT whose `nats` claim is `nats` (which carries its `type` and `version`).

    `jti` is the sha256 of the claims, as nats-io/jwt computes it, so two tokens differ only if
    their content does.
    """
    claims: dict[str, Any] = {
        "jti": "",
        "iat": issued_at if issued_at is not None else int(time.time()),
        "iss": issuer.public,
        "name": name,
        "sub": subject,
        "nats": nats | {"version": 2},
    }
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims).encode()).digest()).decode().rstrip("=")
    signing_input = f"{_b64(json.dumps(_HEADER).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(issuer.sign(signing_input.encode()))}"


def decode_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (the server verifies; we read what we issued)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def credentials(user_jwt: str, user: KeyPair) -> str:
    """The `.creds` file nats clients read (`nats.connect(user_credentials=path)`)."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user.seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


def read_credentials_jwt(text: str) -> str:
    """The user JWT inside a `.creds` file's text."""
    lines = text.splitlines()
    start = lines.index("-----BEGIN NATS USER JWT-----")
    return lines[start + 1].strip()


def read_credentials_seed(text: str) -> str:
    """The user seed inside a `.creds` file's text."""
    lines = text.splitlines()
    return lines[lines.index("-----BEGIN USER NKEY SEED-----") + 1].strip()
