"""The built-in tiny embedding model: deterministic, so a demo or a test can rely on its bytes."""

from __future__ import annotations

from pathlib import Path

from samples.tiny import write_sample


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a, _ = write_sample(tmp_path / "a")
    b, _ = write_sample(tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
