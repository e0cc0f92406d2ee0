"""A run's options: defaults that follow the fleet size, and bad options refused before anything connects."""

from __future__ import annotations

import pytest

from services.edge_agent.fleet.config import SimulationConfig
from services.edge_agent.fleet.errors import FleetConfigError
from services.edge_agent.fleet.faults import parse_faults


def test_config_defaults_follow_the_fleet_size() -> None:
    mix = {"rpi5": 1.0}
    assert SimulationConfig(devices=100, mix=mix).connection_count == 1
    assert SimulationConfig(devices=10_000, mix=mix).connection_count == 20
    assert SimulationConfig(devices=50_000, mix=mix).connection_count == 32
    assert SimulationConfig(devices=10_000, mix=mix).real_inference_count == 50
    assert SimulationConfig(devices=7, mix=mix).real_inference_count == 7
    assert SimulationConfig(devices=10_000, mix=mix, id_prefix="f").device_id(42) == "f-00042"
    assert SimulationConfig(devices=100, mix=mix).input_shift_count == 0  # inputs never shift by default
    assert SimulationConfig(devices=100, mix=mix, input_shift_after=30.0).input_shift_count == 50
    assert SimulationConfig(devices=100, mix=mix, input_shift_after=0.0, input_shift_share=0.2).input_shift_count == 20


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"devices": 0}, "--devices must be at least 1"),
        ({"connections": 200}, "--connections must be between 1 and --devices"),
        ({"id_prefix": "a.b"}, "--id-prefix 'a.b'"),
        ({"window_seconds": 0}, "window_seconds must be a positive number"),
        ({"offline_for": -1}, "offline_for cannot be negative"),
        ({"faults": parse_faults("crash=101")}, "need 101 devices"),
        ({"input_shift_after": -1.0}, "--input-shift-after cannot be negative"),
        ({"input_shift_after": 5.0, "input_shift_share": 0.0}, r"--input-shift-share must be in \(0, 1\]"),
        ({"input_shift_after": 5.0, "input_shift_share": 1.5}, r"--input-shift-share must be in \(0, 1\]"),
    ],
)
def test_bad_options_fail_before_anything_connects(overrides: dict[str, object], message: str) -> None:
    kwargs: dict[str, object] = {"devices": 100, "mix": {"rpi5": 1.0}} | overrides
    with pytest.raises(FleetConfigError, match=message):
        SimulationConfig(**kwargs)  # type: ignore[arg-type]
