"""Device classes from the profile files, built-in ones where no file overrides them."""

from __future__ import annotations

from pathlib import Path

from services.edge_agent.fleet.classes import load_classes
from services.edge_agent.fleet.mix import parse_mix

CLASSES = load_classes()


def test_speed_factors_come_from_the_profiles(tmp_path: Path) -> None:
    assert {n: c.speed_factor for n, c in CLASSES.items()} == {"rpi5": 4.0, "jetson": 1.5, "gateway": 2.5}
    (tmp_path / "rpi5.yaml").write_text("device_class: rpi5\nspeed_factor: 3.0\n")
    (tmp_path / "npu-box.yaml").write_text("device_class: npu-box\nspeed_factor: 0.5\n")
    (tmp_path / "broken.yaml").write_text("device_class: [unclosed\n")
    (tmp_path / "recipes.yaml").write_text("int8: {passes: []}\n")
    classes = load_classes(tmp_path)
    assert classes["rpi5"].speed_factor == 3.0 and classes["rpi5"].arch == "aarch64"
    assert classes["npu-box"].speed_factor == 0.5
    assert classes["jetson"].speed_factor == 1.5  # built-in when no file overrides it
    assert parse_mix("npu-box=1", classes) == {"npu-box": 1.0}
