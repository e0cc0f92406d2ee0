"""Local state survives restarts and never names what a slot does not hold."""

from __future__ import annotations

import json
from pathlib import Path

from services.edge_agent.slots import LocalState, SlotStore, installed


def test_state_round_trips_and_switches_atomically(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "dev")
    assert store.load() == LocalState(active=None, slots={"a": None, "b": None})
    src = tmp_path / "m.onnx"
    src.write_bytes(b"model-a")
    store.place("a", src)
    content = installed("a" * 64, model="m", version="1", variant=None)
    store.commit(LocalState(active="a", slots={"a": content, "b": None}))
    again = SlotStore(tmp_path / "dev").load()
    assert again.active == "a" and again.active_content == content and again.view().inactive == "b"
    assert again.view().slot_with("a" * 64) == "a" and again.view().slot_with("b" * 64) is None
    assert not (tmp_path / "dev" / "state.tmp").exists()


def test_a_slot_whose_file_is_gone_is_not_served(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "dev")
    content = installed("c" * 64, model="m", version="1", variant=None)
    store.commit(LocalState(active="b", slots={"a": None, "b": content}))  # state says b, but b has no file
    assert store.load() == LocalState(active=None, slots={"a": None, "b": None})


def test_a_slot_keeps_the_rollout_wave_it_serves_for_and_older_state_still_loads(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "dev")
    src = tmp_path / "m.onnx"
    src.write_bytes(b"model-a")
    store.place("a", src)
    content = installed("a" * 64, model="m", version="1", variant=None, rollout_id="r1", wave=2)
    store.commit(LocalState(active="a", slots={"a": content, "b": None}))
    assert SlotStore(tmp_path / "dev").load().active_content == content
    state = json.loads((tmp_path / "dev" / "state.json").read_text())
    del state["slots"]["a"]["rollout_id"], state["slots"]["a"]["wave"]  # written by an agent before schema 2
    (tmp_path / "dev" / "state.json").write_text(json.dumps(state))
    older = SlotStore(tmp_path / "dev").load().active_content
    assert older is not None and (older.rollout_id, older.wave) == (None, None)
