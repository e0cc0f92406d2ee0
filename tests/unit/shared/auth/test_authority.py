"""The trust root on disk: issuing, refusing, rotating and revoking identities (no server)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from shared.auth import tokens
from shared.auth.authority import Authority
from shared.errors import Conflict, InvalidRequest, NotFound


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return Authority.create(tmp_path / "auth")


def revocations(authority: Authority) -> dict[str, int]:
    return dict(tokens.decode_claims(authority.account_jwt())["nats"].get("revocations") or {})


def test_an_identity_is_issued_once_and_recorded(authority: Authority) -> None:
    creds = authority.issue("device", "dev-1", device_class="rpi5", labels={"site": "lab"})
    claims = tokens.decode_claims(tokens.read_credentials_jwt(creds))
    assert claims["name"] == "dev-1" and claims["nats"]["issuer_account"] == authority.account_public_key
    identity = authority.identity("device", "dev-1")
    assert identity is not None and identity.active and identity.device_class == "rpi5"
    with pytest.raises(Conflict, match="already enrolled"):
        authority.issue("device", "dev-1")


def test_rotating_revokes_the_old_key(authority: Authority) -> None:
    authority.issue("device", "dev-1")
    old = authority.identity("device", "dev-1")
    authority.issue("device", "dev-1", rotate=True)
    new = authority.identity("device", "dev-1")
    assert old is not None and new is not None and new.public_key != old.public_key
    assert old.public_key in revocations(authority) and new.public_key not in revocations(authority)


def test_revoking_puts_the_key_on_the_accounts_list_on_disk(authority: Authority) -> None:
    authority.issue("device", "dev-1")
    revoked = authority.revoke("device", "dev-1")
    assert not revoked.active and revoked.public_key in revocations(authority)
    assert revoked.public_key in revocations(Authority(authority.directory))  # on disk, for the next start
    assert not authority.creds_path("device", "dev-1").exists()
    with pytest.raises(Conflict, match="revoked already"):
        authority.revoke("device", "dev-1")
    with pytest.raises(NotFound):
        authority.revoke("device", "never-enrolled")


def test_names_must_be_subject_tokens_and_services_need_their_declarations(authority: Authority) -> None:
    with pytest.raises(InvalidRequest, match="must match"):
        authority.issue("device", "a.b")
    with pytest.raises(InvalidRequest, match="declared access"):
        authority.issue("service", "registry")


def test_secrets_are_owner_only_and_the_servers_part_holds_none(authority: Authority, tmp_path: Path) -> None:
    authority.issue("operator", "cli")
    for path in [*authority.directory.glob("*.nk"), authority.creds_path("operator", "cli")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    exported = authority.export_server_part(tmp_path / "server")
    text = exported.read_text()
    assert str(tmp_path / "server" / "operator.jwt") in text and authority.account_public_key in text
    seeds = [p.read_text().strip() for p in authority.directory.glob("*.nk")]
    assert not any(seed in text for seed in seeds)
    assert sorted(p.name for p in (tmp_path / "server").iterdir()) == ["nats-auth.conf", "operator.jwt"]


def test_an_existing_authority_is_required_where_one_is_expected(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no deployment keys"):
        Authority.existing(tmp_path / "nowhere")
