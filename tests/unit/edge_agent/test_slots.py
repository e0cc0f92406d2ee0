"""Local state survives restarts and never names what a slot does not hold; downloads give up cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.edge_agent.download import download
from services.edge_agent.errors import DownloadFailed
from services.edge_agent.slots import LocalState, SlotStore, installed
from shared.stack.servers import free_port


def test_state_round_trips_and_switches_atomically(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "dev")
    assert store.load() == LocalState(active=None, slots={"a": None, "b": None})
    src = tmp_path / "m.onnx"
    src.write_bytes(b"model-a")
    store.place("a", src)
    content = installed("a" * 64, model="m", version="1", variant=None)
    store.commit(LocalState(active="a", slots={"a": content, "b": None}))
    again = SlotStore(tmp_path / "dev").load()
    assert again.active == "a" and again.active_content == content and again.inactive == "b"
    assert again.slot_with("a" * 64) == "a" and again.slot_with("b" * 64) is None
    assert not (tmp_path / "dev" / "state.tmp").exists()


def test_a_slot_whose_file_is_gone_is_not_served(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "dev")
    content = installed("c" * 64, model="m", version="1", variant=None)
    store.commit(LocalState(active="b", slots={"a": None, "b": content}))  # state says b, but b has no file
    assert store.load() == LocalState(active=None, slots={"a": None, "b": None})


def test_download_gives_up_after_bounded_attempts_and_counts_url_failures(tmp_path: Path) -> None:
    attempts: list[int] = []
    calls = {"n": 0}

    def flaky_url() -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TimeoutError("registry did not answer")
        return f"http://127.0.0.1:{free_port()}/nothing-listens-here"

    with pytest.raises(DownloadFailed, match="incomplete after 3 attempts"):
        download(flaky_url, tmp_path / "x.part", size=10, attempts=3, backoff=0.01, on_attempt=attempts.append)
    assert attempts == [1, 2, 3] and calls["n"] == 3


def test_a_complete_partial_file_needs_no_request(tmp_path: Path) -> None:
    part = tmp_path / "done.part"
    part.write_bytes(b"0123456789")

    def no_url() -> str:
        raise AssertionError("must not ask for a URL")

    assert download(no_url, part, size=10) == part
