"""JWTs and .creds files as nats-io/jwt v2 shapes them (the real server accepts them: see
tests/integration/test_permissions.py); here, their content and signatures, without a server."""

from __future__ import annotations

import base64

import nkeys

from shared.auth import tokens


def test_a_jwt_carries_its_claims_and_the_issuers_signature() -> None:
    issuer, subject = tokens.KeyPair.create("account"), tokens.KeyPair.create("user")
    token = tokens.encode(subject=subject.public, name="dev-1", nats={"type": "user"}, issuer=issuer, issued_at=7)
    claims = tokens.decode_claims(token)
    assert (claims["iss"], claims["sub"], claims["name"], claims["iat"]) == (issuer.public, subject.public, "dev-1", 7)
    assert claims["nats"] == {"type": "user", "version": 2} and claims["jti"]
    header, payload, signature = token.split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    assert nkeys.from_seed(issuer.seed.encode()).verify(f"{header}.{payload}".encode(), raw)


def test_keys_have_their_roles_prefix() -> None:
    assert tokens.KeyPair.create("operator").public.startswith("O")
    assert tokens.KeyPair.create("account").public.startswith("A")
    user = tokens.KeyPair.create("user")
    assert user.public.startswith("U") and user.seed.startswith("SU")
    assert tokens.KeyPair.from_seed(user.seed) == user


def test_a_creds_file_holds_the_jwt_and_the_seed() -> None:
    user = tokens.KeyPair.create("user")
    token = tokens.encode(subject=user.public, name="x", nats={"type": "user"}, issuer=tokens.KeyPair.create("account"))
    text = tokens.credentials(token, user)
    assert tokens.read_credentials_jwt(text) == token
    assert tokens.read_credentials_seed(text) == user.seed
