"""Device classes: what a simulated rpi5, jetson or gateway looks like and how fast it is.

The speed factor (device latency / this host's latency) is the one the optimizer already uses for
budgets, read from `deploy/profiles/<class>.yaml`, so a simulated device's latency and a profile's
budget are scaled by the same number. Link speeds, RAM and CPU counts are stated assumptions for
typical hardware of each class; they only set how long a simulated transfer takes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from services.edge_agent.fleet.errors import FleetConfigError

PROFILES_DIR = Path(__file__).resolve().parents[3] / "deploy" / "profiles"
MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class DeviceClass:
    """One class of simulated hardware.

    Args:
        name: the class as devices report it in hello (`device_class`).
        speed_factor: device latency divided by this host's latency for the same model.
        link_bytes_per_second: download speed of a healthy link.
        hash_bytes_per_second: sha256 throughput, for the simulated duration of verification.
    """

    name: str
    speed_factor: float
    link_bytes_per_second: float
    hash_bytes_per_second: float
    ram_mb: int
    cpu_count: int
    arch: str
    accelerators: tuple[str, ...] = ()


# Wi-Fi Raspberry Pi 5, Ethernet Jetson Orin Nano (run on its CPU cores, as its profile assumes, so
# no GPU execution provider), and an industrial gateway on a cellular link.
BUILT_IN: dict[str, DeviceClass] = {
    "rpi5": DeviceClass(
        name="rpi5",
        speed_factor=4.0,
        link_bytes_per_second=5 * MIB,
        hash_bytes_per_second=400 * MIB,
        ram_mb=8192,
        cpu_count=4,
        arch="aarch64",
    ),
    "jetson": DeviceClass(
        name="jetson",
        speed_factor=1.5,
        link_bytes_per_second=12 * MIB,
        hash_bytes_per_second=800 * MIB,
        ram_mb=8192,
        cpu_count=6,
        arch="aarch64",
        accelerators=("cuda",),
    ),
    "gateway": DeviceClass(
        name="gateway",
        speed_factor=2.5,
        link_bytes_per_second=0.5 * MIB,
        hash_bytes_per_second=200 * MIB,
        ram_mb=2048,
        cpu_count=2,
        arch="x86_64",
    ),
}
# A class known only from a profile file gets its speed factor from there and these assumptions.
_GENERIC = DeviceClass(
    name="generic",
    speed_factor=1.0,
    link_bytes_per_second=2 * MIB,
    hash_bytes_per_second=300 * MIB,
    ram_mb=4096,
    cpu_count=4,
    arch="aarch64",
)


def load_classes(profiles_dir: Path | None = None) -> dict[str, DeviceClass]:
    """The built-in classes, with speed factors (and any extra classes) from the profile files.

    A profile file that does not parse or has no numeric `speed_factor` is skipped: the optimizer
    validates profiles; the simulator only borrows one number from them.
    """
    classes = dict(BUILT_IN)
    directory = profiles_dir or PROFILES_DIR
    if not directory.is_dir():
        return classes
    for path in sorted(directory.glob("*.yaml")):
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(doc, dict):
            continue
        name, factor = doc.get("device_class"), doc.get("speed_factor")
        if not isinstance(name, str) or isinstance(factor, bool) or not isinstance(factor, int | float) or factor <= 0:
            continue
        classes[name] = replace(classes.get(name, _GENERIC), name=name, speed_factor=float(factor))
    return classes


def known_class(name: str, classes: dict[str, DeviceClass]) -> DeviceClass:
    """The class called `name`, or a FleetConfigError listing the known ones."""
    try:
        return classes[name]
    except KeyError:
        known = ", ".join(sorted(classes))
        raise FleetConfigError(
            f"unknown device class {name!r}; known classes: {known} (add deploy/profiles/{name}.yaml "
            "with device_class and speed_factor to define one)"
        ) from None
