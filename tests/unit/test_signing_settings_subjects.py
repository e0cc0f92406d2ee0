from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from shared import signing, subjects
from shared.messages.registry import RegisterModel
from shared.settings import Settings, load_settings


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


def test_subject_rules() -> None:
    assert subjects.command(RegisterModel) == "slmops.cmd.model.register"
    assert subjects.rpc("registry", "list") == "slmops.rpc.registry.list"
    assert subjects.telemetry("dev-1") == "slmops.telemetry.dev-1"
    for bad in ("a.b", "*", ">", "with space", "", "dev-1\n"):
        with pytest.raises(ValueError):
            subjects.device_status(bad)


def test_settings_fill_addresses_from_a_running_stack_unless_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("SLMOPS_NATS_URL", "SLMOPS_S3_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLMOPS_HOME", str(tmp_path))
    (tmp_path / "stack.json").write_text(
        json.dumps({"nats_url": "nats://127.0.0.1:1111", "s3_endpoint": "127.0.0.1:2222"})
    )
    s = load_settings()
    assert (s.nats_url, s.s3_endpoint) == ("nats://127.0.0.1:1111", "127.0.0.1:2222")
    monkeypatch.setenv("SLMOPS_NATS_URL", "nats://elsewhere:4222")
    assert load_settings().nats_url == "nats://elsewhere:4222"
    assert Settings().signing_key_file == tmp_path / "keys" / "registry-ed25519.pem"
