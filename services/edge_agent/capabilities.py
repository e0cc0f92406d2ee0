"""What this host offers a model: architecture, memory, CPUs, onnxruntime and its providers.

Detected once at start and sent in every hello; each value can be overridden (a test rig that
stands in for a Raspberry Pi says so), which is why they are plain fields, not live probes.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass, field

import onnxruntime as ort


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    arch: str
    ram_mb: int
    cpu_count: int
    onnxruntime_version: str
    execution_providers: list[str]
    accelerators: list[str] = field(default_factory=list)


def detect(**overrides: object) -> Capabilities:
    """This host's capabilities, with any non-None override applied."""
    providers = list(ort.get_available_providers())
    detected: dict[str, object] = {
        "arch": platform.machine() or "unknown",
        "ram_mb": _ram_mb(),
        "cpu_count": os.cpu_count() or 1,
        "onnxruntime_version": _release(ort.__version__),
        "execution_providers": providers,
        "accelerators": sorted({_ACCELERATORS[p] for p in providers if p in _ACCELERATORS}),
    }
    detected.update({k: v for k, v in overrides.items() if v is not None})
    return Capabilities(**detected)  # type: ignore[arg-type]


_ACCELERATORS = {
    "CUDAExecutionProvider": "cuda",
    "TensorrtExecutionProvider": "tensorrt",
    "ROCMExecutionProvider": "rocm",
    "CoreMLExecutionProvider": "coreml",
    "QNNExecutionProvider": "npu",
    "OpenVINOExecutionProvider": "openvino",
}


def _ram_mb() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**2)
    except (ValueError, OSError, AttributeError):
        return 1


def _release(version: str) -> str:
    """`1.20.1.dev2024` -> `1.20.1`: the contract wants a plain release number."""
    match = re.match(r"^(\d+\.\d+(?:\.\d+)?)", version)
    return match.group(1) if match else "0.0"
