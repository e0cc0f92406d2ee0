"""The fleet simulator: thousands of simulated devices in one process, on the real device protocol.

Start with `simulator.py` (what runs per process and why), `device.py` (the install state machine),
`artifacts.py` and `telemetry.py` (what is real and what is drawn from real measurements).
"""

from services.edge_agent.fleet.classes import DeviceClass, load_classes
from services.edge_agent.fleet.config import SimulationConfig
from services.edge_agent.fleet.errors import FleetConfigError, FleetError
from services.edge_agent.fleet.faults import Fault, FaultPlan, assign_faults, parse_faults
from services.edge_agent.fleet.mix import DEFAULT_MIX, allocate, assign_classes, parse_mix
from services.edge_agent.fleet.report import FleetReport
from services.edge_agent.fleet.simulator import FleetSimulator

__all__ = [
    "DEFAULT_MIX",
    "DeviceClass",
    "Fault",
    "FaultPlan",
    "FleetConfigError",
    "FleetError",
    "FleetReport",
    "FleetSimulator",
    "SimulationConfig",
    "allocate",
    "assign_classes",
    "assign_faults",
    "load_classes",
    "parse_faults",
    "parse_mix",
]
