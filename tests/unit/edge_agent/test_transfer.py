"""One HTTP transfer attempt: what is worth resuming, a whole body when the range is ignored, errors mapped."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from services.edge_agent.errors import DownloadFailed
from services.edge_agent.transfer import fetch_range, held


def test_held_is_what_the_partial_file_has(tmp_path: Path) -> None:
    part = tmp_path / "x.part"
    assert held(part, size=10) == 0
    part.write_bytes(b"0123")
    assert held(part, size=10) == 4


def test_a_partial_file_longer_than_the_artifact_is_removed(tmp_path: Path) -> None:
    part = tmp_path / "x.part"
    part.write_bytes(b"0123456789abc")
    assert held(part, size=10) == 0 and not part.exists()


def test_a_server_that_ignores_the_range_sends_the_whole_body_which_replaces_the_part(tmp_path: Path) -> None:
    source = tmp_path / "blob"
    source.write_bytes(b"0123456789")
    part = tmp_path / "x.part"
    part.write_bytes(b"0123")
    seen: list[int] = []
    assert fetch_range(source.as_uri(), part, have=4, on_progress=seen.append) == 10  # file:// has no ranges
    assert part.read_bytes() == b"0123456789" and seen == [10]


def test_a_failed_request_is_a_download_failure_and_keeps_the_part(tmp_path: Path) -> None:
    part = tmp_path / "x.part"
    part.write_bytes(b"0123")
    with pytest.raises(DownloadFailed, match="URLError"):
        fetch_range((tmp_path / "gone").as_uri(), part, have=4)
    assert part.read_bytes() == b"0123"


def test_a_stopped_attempt_writes_nothing_more(tmp_path: Path) -> None:
    source = tmp_path / "blob"
    source.write_bytes(b"x" * 200_000)
    stop = threading.Event()
    stop.set()
    assert fetch_range(source.as_uri(), tmp_path / "x.part", have=0, stop=stop) == 0
