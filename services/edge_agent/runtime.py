"""Local inference: an onnxruntime session per loaded model, a smoke test, synthetic inputs.

Applications on the device call `ModelRuntime.infer` (or the agent's HTTP endpoint, which calls
it). A model must pass a smoke run before the agent switches to it, so a model that loads but
cannot compute never becomes the one serving.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort

from services.edge_agent.desired import NO_CONFIG, AppConfig
from services.edge_agent.errors import LoadFailed

# onnxruntime's input type names -> numpy dtypes (for building and converting inputs).
NUMPY_DTYPES = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(bool)": np.bool_,
}


class LoadedModel:
    """One model in memory: its session, and the digest it was loaded from."""

    def __init__(self, path: Path, *, digest: str, threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises untyped errors for any load failure
            raise LoadFailed(f"onnxruntime cannot load the model: {exc}") from None
        self.digest = digest
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ValueError(f"missing inputs {missing}; the model takes {self.input_names}")
        return [np.asarray(o) for o in self.session.run(None, {n: inputs[n] for n in self.input_names})]

    def synthetic_inputs(self, *, batch: int = 1, sequence: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
        """Inputs shaped by the graph's specs (symbolic dims -> `batch`, then `sequence`): token-id
        inputs get ids in [1, 1000), masks get ones, floats get small random values."""
        rng = np.random.default_rng(seed)
        feeds: dict[str, np.ndarray] = {}
        for spec in self.session.get_inputs():
            dims = [
                d if isinstance(d, int) and d > 0 else (batch if i == 0 else sequence) for i, d in enumerate(spec.shape)
            ]
            dtype = NUMPY_DTYPES.get(spec.type, np.float32)
            if np.issubdtype(dtype, np.integer):
                feeds[spec.name] = (
                    np.ones(dims, dtype=dtype)
                    if "mask" in spec.name
                    else rng.integers(1, 1000, size=dims).astype(dtype)
                )
            elif dtype is np.bool_:
                feeds[spec.name] = np.ones(dims, dtype=np.bool_)
            else:
                feeds[spec.name] = rng.standard_normal(dims).astype(dtype)
        return feeds

    def smoke(self, inputs: dict[str, np.ndarray] | None = None) -> None:
        """Run one input; raise LoadFailed if it errors or produces non-finite values."""
        try:
            outputs = self.run(inputs or self.synthetic_inputs())
        except Exception as exc:
            raise LoadFailed(f"the smoke input fails on the model: {exc}") from None
        for out in outputs:
            if np.issubdtype(out.dtype, np.floating) and not np.all(np.isfinite(out)):
                raise LoadFailed("the smoke input produced NaN or infinity")


class ModelRuntime:
    """The serving model and, in shadow mode, the previous one, and the application settings that
    serve with the model; swapped atomically under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active: LoadedModel | None = None
        self.shadow: LoadedModel | None = None
        self._config = NO_CONFIG

    def swap(self, active: LoadedModel, *, shadow: LoadedModel | None, config: AppConfig | None = None) -> None:
        """Serve `active` (with `shadow`) and, when given, `config` with it in the same step (None:
        the settings serving now stay, as when only shadow mode changes)."""
        with self._lock:
            self.active, self.shadow = active, shadow
            if config is not None:
                self._config = config

    def configure(self, config: AppConfig) -> None:
        """Serve `config` with the model serving now (a desired state that changed only the settings)."""
        with self._lock:
            self._config = config

    def current(self) -> tuple[LoadedModel | None, LoadedModel | None]:
        with self._lock:
            return self.active, self.shadow

    def app_config(self) -> AppConfig:
        """The settings serving now, for the device's applications (NO_CONFIG: none)."""
        with self._lock:
            return self._config
