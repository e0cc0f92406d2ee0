"""Signatures over artifact digests: the key is created once, private, and verifies only its own."""

from __future__ import annotations

import stat
from pathlib import Path

from shared import signing


def test_key_is_created_once_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "k.pem"
    key = signing.load_or_create_private_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = signing.load_or_create_private_key(path)
    assert signing.public_key_pem(key) == signing.public_key_pem(again)
    sig = signing.sign_digest(key, "a" * 64)
    pem = signing.public_key_pem(key)
    assert signing.verify_digest(pem, "a" * 64, sig)
    assert not signing.verify_digest(pem, "b" * 64, sig)
    assert not signing.verify_digest(pem, "a" * 64, "not-base64!")
    other = signing.load_or_create_private_key(tmp_path / "other.pem")
    assert not signing.verify_digest(signing.public_key_pem(other), "a" * 64, sig)
    assert len(signing.key_id(pem)) == 64
