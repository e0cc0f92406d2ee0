"""The rollout CLI's tables (services/rollout/render.py), rendered to text."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from services.rollout.planning import plan
from services.rollout.render import history_table, plan_tables, rollout_table, rollouts_table
from shared.messages.rollout import Selector, Wave
from tests.unit.rollout.test_decide import record
from tests.unit.rollout.test_planning import VARIANTS, device, version


def text(table: Table) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_the_plan_shows_each_wave_s_classes_with_their_artifact_and_every_exclusion_with_its_reason() -> None:
    fleet = [device(f"r{i}", device_class="rpi5") for i in range(4)] + [device("tiny", ram_mb=64)]
    planned = plan(
        rollout_id="r",
        selector=Selector(),
        waves=[Wave(percent=50), Wave(percent=100)],
        version=version(),
        variants=VARIANTS,
        devices=fleet,
    )
    waves, excluded = plan_tables(planned, model="minilm", version="1.0")
    shown = text(waves)
    assert "4 devices, 1 excluded" in shown and "rpi5" in shown and "int8" in shown
    assert "tiny" in text(excluded) and "110 MB RAM (has 64)" in text(excluded)


def test_a_rollout_and_the_list_show_state_waves_and_counts() -> None:
    rec = record()
    assert "ro-1: minilm 2.0, pending" in text(rollout_table(rec))
    assert "gateway 1, rpi5 2" in text(rollout_table(rec))
    assert "1/2" in text(rollouts_table([rec])) and "6" in text(rollouts_table([rec]))


def test_history_says_what_each_event_changed() -> None:
    events = [
        {
            "type": "rollout.started",
            "time": "t",
            "data": {"rollout_id": "r", "plan": [], "targets": 6, "version": "2.0"},
        },
        {"type": "wave.started", "time": "t", "data": {"rollout_id": "r", "wave": {"index": 0, "devices": 3}}},
        {
            "type": "gate.verdict",
            "time": "t",
            "data": {"rollout_id": "r", "wave": 0, "metric": "error_rate", "verdict": "Failed", "observed": 0.2},
        },
        {"type": "wave.completed", "time": "t", "data": {"wave": 0, "verdict": "Failed", "installed": 3, "devices": 3}},
        {"type": "rollout.state_changed", "time": "t", "data": {"from_state": "soaking", "to_state": "rolling_back"}},
        {"type": "rollout.rolled_back", "time": "t", "data": {"devices": 3, "trigger": "gate", "reason": "slow"}},
    ]
    shown = text(history_table("r", events))
    for expected in (
        "6 devices, version 2.0",
        "wave 0: 3 devices",
        "wave 0 wave error_rate: Failed (observed 0.2)",
        "wave 0: Failed, 3 of 3 installed",
        "soaking -> rolling_back",
        "3 devices reverted (gate): slow",
    ):
        assert expected in shown, expected
