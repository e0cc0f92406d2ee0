"""The e2e tests' embedded stack: `slmops up --detach` in a temporary home, `slmops down` after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_cli_stack import slmops


@pytest.fixture
def stack_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / ".slmops"
    slmops(home, "up", "--detach", "--nats-port", "0", "--s3-port", "0")
    yield home
    slmops(home, "down", check=False)
