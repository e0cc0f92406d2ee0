"""Settings: addresses come from a running embedded stack unless the environment names them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.settings import Settings, load_settings


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
