"""What one simulation run is: fleet size, mix, faults, and the timings of the simulated world.

Checked once, up front, so a bad option fails before any connection is opened, with a message
that names the option.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from services.edge_agent.fleet.errors import FleetConfigError
from services.edge_agent.fleet.faults import FaultPlan

DEFAULT_MIX = "rpi5=60,jetson=30,gateway=10"
DEVICES_PER_CONNECTION = 500
MAX_CONNECTIONS = 32
MAX_REAL_INFERENCE = 50
# Device ids are `<prefix>-<index>`, and ids are subject tokens of at most 64 characters.
_PREFIX = re.compile(r"^[A-Za-z0-9_\-]{1,40}$")


@dataclass(frozen=True, kw_only=True)
class SimulationConfig:
    """One run of the fleet simulator.

    Args:
        devices: fleet size.
        mix: relative weight of each device class (see `mix.parse_mix`).
        faults: injected faults (see `faults.parse_faults`).
        connections: NATS connections shared by the devices; None = one per 500 devices, at most 32.
        real_inference: devices running real onnxruntime inference; None = min(devices, 50).
        id_prefix: device ids are `<id_prefix>-<index>`, so two simulations can share a server.
        heartbeat_seconds: hello period per device (phases are spread at random).
        window_seconds: telemetry window length per device.
        request_rate: inference requests per second per device (the telemetry's workload).
        measure_requests: requests run on this host per distinct artifact to measure it.
        download_attempts: bounded download retries before a device reports `failed`.
        download_backoff: seconds before the first retry; doubled for each further one.
        slow_factor: how many times slower a `slow` device's link is.
        offline_after: seconds after its first hello that an `offline` device drops off.
        offline_for: seconds an `offline` device stays away.
        crash_restart: seconds a `crash` device takes to come back after crashing.
        share_download_urls: devices on one connection reuse a presigned URL per digest for half its
            TTL (one registry request per connection and digest instead of one per device).
        labels: extra labels every device reports in hello.
        registry_key_pem: the registry's public key every device verifies against (pinned, never
            asked of the bus); None = the platform's copy, `<signing key>.pub` next to the key.
        input_shift_after: seconds after the start from which the inputs of `input_shift_share` of
            the devices shift (token ids from a narrow band of the vocabulary, see
            `inference.py`): their windows are drawn from a real measurement on shifted inputs and
            real-inference devices run shifted inputs. None = inputs never shift.
        input_shift_share: the share of the devices whose inputs shift (spread over the classes,
            chosen with `seed`).
        seed: makes class and fault assignment, and every random draw, repeatable.
    """

    devices: int
    mix: dict[str, float]
    faults: FaultPlan = field(default_factory=FaultPlan)
    connections: int | None = None
    real_inference: int | None = None
    id_prefix: str = "sim"
    heartbeat_seconds: float = 30.0
    window_seconds: float = 30.0
    request_rate: float = 1.0
    measure_requests: int = 200
    download_attempts: int = 3
    download_backoff: float = 0.5
    slow_factor: float = 10.0
    offline_after: float = 5.0
    offline_for: float = 20.0
    crash_restart: float = 2.0
    share_download_urls: bool = True
    labels: dict[str, str] = field(default_factory=dict)
    registry_key_pem: str | None = None
    input_shift_after: float | None = None
    input_shift_share: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.devices < 1:
            raise FleetConfigError(f"--devices must be at least 1, got {self.devices}")
        if not self.mix:
            raise FleetConfigError("the class mix is empty")
        if self.connections is not None and not 1 <= self.connections <= self.devices:
            raise FleetConfigError(
                f"--connections must be between 1 and --devices ({self.devices}), got {self.connections}"
            )
        if self.real_inference is not None and self.real_inference < 0:
            raise FleetConfigError(f"--real-inference cannot be negative, got {self.real_inference}")
        if not _PREFIX.fullmatch(self.id_prefix):
            raise FleetConfigError(f"--id-prefix {self.id_prefix!r} must be 1-40 letters, digits, '_' or '-'")
        positive = {
            "heartbeat_seconds": self.heartbeat_seconds,
            "window_seconds": self.window_seconds,
            "request_rate": self.request_rate,
            "slow_factor": self.slow_factor,
        }
        non_negative = {
            "download_backoff": self.download_backoff,
            "offline_after": self.offline_after,
            "offline_for": self.offline_for,
            "crash_restart": self.crash_restart,
        }
        for name, value in positive.items():
            if not math.isfinite(value) or value <= 0:
                raise FleetConfigError(f"{name} must be a positive number, got {value}")
        for name, value in non_negative.items():
            if not math.isfinite(value) or value < 0:
                raise FleetConfigError(f"{name} cannot be negative, got {value}")
        if self.download_attempts < 1:
            raise FleetConfigError(f"download_attempts must be at least 1, got {self.download_attempts}")
        if self.input_shift_after is not None and (
            not math.isfinite(self.input_shift_after) or self.input_shift_after < 0
        ):
            raise FleetConfigError(f"--input-shift-after cannot be negative, got {self.input_shift_after}")
        if not (math.isfinite(self.input_shift_share) and 0 < self.input_shift_share <= 1):
            raise FleetConfigError(f"--input-shift-share must be in (0, 1], got {self.input_shift_share}")
        if self.measure_requests < 10:
            raise FleetConfigError(f"measure_requests must be at least 10, got {self.measure_requests}")
        self.faults.counts(self.devices)  # raises if the plan needs more devices than there are

    @property
    def connection_count(self) -> int:
        if self.connections is not None:
            return self.connections
        return min(MAX_CONNECTIONS, math.ceil(self.devices / DEVICES_PER_CONNECTION))

    @property
    def real_inference_count(self) -> int:
        if self.real_inference is not None:
            return min(self.real_inference, self.devices)
        return min(self.devices, MAX_REAL_INFERENCE)

    @property
    def input_shift_count(self) -> int:
        """Devices whose inputs shift (none without `input_shift_after`)."""
        if self.input_shift_after is None:
            return 0
        return round(self.devices * self.input_shift_share)

    def device_id(self, index: int) -> str:
        width = max(5, len(str(self.devices - 1)))
        return f"{self.id_prefix}-{index:0{width}d}"
