"""The fleet simulator: thousands of simulated devices in one process, on the real device protocol.

Start with `simulator.py` (what runs per process and why), `device.py` (the install state machine),
`artifacts.py` and `telemetry.py` (what is real and what is drawn from real measurements). Import
from the modules themselves: this package imports nothing, so the CLI can read `config.py` and
`faults.py` without loading onnxruntime.
"""
