"""Real onnxruntime inference for the fleet, run in one worker process.

Two jobs, both real: (1) measure each distinct artifact once on this host (load time, a smoke run,
then `requests` single requests with synthetic inputs: latency, output moments, errors) and, for
shadow mode, how often it agrees with the previous model on the same inputs; (2) run the requests of
the few devices that do real inference (`--real-inference K`).

Why a separate process: latency of a model that runs in tens of microseconds would otherwise be
dominated by waiting for the GIL while the simulator's event loop serves ten thousand devices.
The worker holds one session per distinct digest, shared by every real-inference device on that
model (a session per device would multiply a model's memory by K for no extra realism).

Synthetic inputs follow the graph's input specs: token ids in [1, 1000), attention masks of ones,
token-type ids of zeros, floats from a normal distribution; symbolic dimensions become batch 1 and a
short sequence (8-32 tokens). Input `i` of seed `s` is always the same, so the agreement measured
for a pair of models lines up request by request with each model's own measurement.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort

from services.edge_agent.runtime import NUMPY_DTYPES
from services.edge_agent.telemetry import embeddings_agree

T = TypeVar("T")
WARMUP_RUNS = 5
MIN_SEQUENCE, MAX_SEQUENCE = 8, 32


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """One artifact measured on this host: per-request arrays, aligned by request index.

    Output moments are kept per request (count, sum, sum of squares, of the row norms and of the
    values of the first output) so a window can be drawn by resampling requests and adding their
    moments, which gives exactly what `WindowRecorder` would have computed on those requests.
    """

    digest: str
    latency_ms: np.ndarray
    errors: np.ndarray
    norm_moments: np.ndarray
    value_moments: np.ndarray
    load_ms: float
    smoke_ms: float
    failure: str | None = None

    @property
    def requests(self) -> int:
        return int(self.latency_ms.size)


@dataclass(frozen=True, kw_only=True)
class InferenceResult:
    """One real request of one device: host latency, first output, shadow verdict, or the error."""

    latency_ms: float
    output: np.ndarray | None
    agreed: bool | None = None
    error: str | None = None


# --- worker side: these run in the worker process ----------------------------------------------

_SESSIONS: dict[str, ort.InferenceSession] = {}


def _load(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _session(digest: str, path: str) -> ort.InferenceSession:
    session = _SESSIONS.get(digest)
    if session is None:
        session = _SESSIONS[digest] = _load(path)
    return session


def synthetic_inputs(session: ort.InferenceSession, *, seed: int, index: int) -> dict[str, np.ndarray]:
    """Request `index` of stream `seed`, shaped by the graph's input specs."""
    rng = np.random.default_rng([seed, index])
    sequence = int(rng.integers(MIN_SEQUENCE, MAX_SEQUENCE + 1))
    feeds: dict[str, np.ndarray] = {}
    for spec in session.get_inputs():
        dims = [d if isinstance(d, int) and d > 0 else (1 if i == 0 else sequence) for i, d in enumerate(spec.shape)]
        dtype = NUMPY_DTYPES.get(spec.type, np.float32)
        name = spec.name.lower()
        if dtype is np.bool_ or (np.issubdtype(dtype, np.integer) and "mask" in name):
            feeds[spec.name] = np.ones(dims, dtype=dtype)
        elif np.issubdtype(dtype, np.integer) and ("type" in name or "segment" in name):
            feeds[spec.name] = np.zeros(dims, dtype=dtype)
        elif np.issubdtype(dtype, np.integer):
            feeds[spec.name] = rng.integers(1, 1000, size=dims).astype(dtype)
        else:
            feeds[spec.name] = rng.standard_normal(dims).astype(dtype)
    return feeds


def _first_output(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(session.run(None, feeds)[0])


def _moments(output: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(n, sum, sum of squares) of the row norms and of the values, rows as WindowRecorder makes them."""
    rows = output.reshape(output.shape[0], -1) if output.ndim > 1 else output.reshape(1, -1)
    rows = rows.astype(np.float64)
    norms = np.linalg.norm(rows, axis=1)
    return (
        (float(norms.size), float(norms.sum()), float(np.square(norms).sum())),
        (float(rows.size), float(rows.sum()), float(np.square(rows).sum())),
    )


def measure(path: str, digest: str, requests: int, seed: int) -> Measurement:
    """Load, smoke-test, then time `requests` single requests of the artifact at `path`."""
    started = time.perf_counter()
    try:
        session = _load(path)
    except Exception as exc:  # onnxruntime raises untyped errors for any load failure
        return _failed(digest, f"onnxruntime cannot load the model: {exc}")
    load_ms = (time.perf_counter() - started) * 1000
    _SESSIONS.setdefault(digest, session)
    try:
        started = time.perf_counter()
        smoke = _first_output(session, synthetic_inputs(session, seed=seed + 2, index=0))
        smoke_ms = (time.perf_counter() - started) * 1000
    except Exception as exc:
        return _failed(digest, f"the smoke input fails on the model: {exc}", load_ms=load_ms)
    if np.issubdtype(smoke.dtype, np.floating) and not np.all(np.isfinite(smoke)):
        return _failed(digest, "the smoke input produced NaN or infinity", load_ms=load_ms)
    for i in range(WARMUP_RUNS):
        _first_output(session, synthetic_inputs(session, seed=seed + 1, index=i))
    latency = np.zeros(requests)
    errors = np.zeros(requests, dtype=bool)
    norms = np.zeros((requests, 3))
    values = np.zeros((requests, 3))
    for i in range(requests):
        feeds = synthetic_inputs(session, seed=seed, index=i)
        started = time.perf_counter()
        try:
            output = _first_output(session, feeds)
        except Exception:
            errors[i] = True
            latency[i] = (time.perf_counter() - started) * 1000
            continue
        latency[i] = (time.perf_counter() - started) * 1000
        norms[i], values[i] = _moments(output)
    return Measurement(
        digest=digest,
        latency_ms=latency,
        errors=errors,
        norm_moments=norms,
        value_moments=values,
        load_ms=load_ms,
        smoke_ms=smoke_ms,
    )


def _failed(digest: str, reason: str, *, load_ms: float = 0.0) -> Measurement:
    zeros = np.zeros(0)
    return Measurement(
        digest=digest,
        latency_ms=zeros,
        errors=zeros.astype(bool),
        norm_moments=np.zeros((0, 3)),
        value_moments=np.zeros((0, 3)),
        load_ms=load_ms,
        smoke_ms=0.0,
        failure=reason,
    )


def agreement(new: tuple[str, str], previous: tuple[str, str], requests: int, seed: int) -> np.ndarray:
    """Per request of `measure(new, seed)`: did the previous model agree on the same input?

    Args:
        new: (digest, path) of the model being measured.
        previous: (digest, path) of the model it replaced.
    """
    new_session, old_session = _session(*new), _session(*previous)
    agreed = np.zeros(requests, dtype=bool)
    for i in range(requests):
        feeds = synthetic_inputs(new_session, seed=seed, index=i)
        try:
            a, b = _first_output(new_session, feeds), _first_output(old_session, feeds)
        except Exception:
            continue
        agreed[i] = a.shape == b.shape and embeddings_agree(a, b)
    return agreed


def infer(model: tuple[str, str], shadow: tuple[str, str] | None, seed: int, index: int) -> InferenceResult:
    """One real request of a real-inference device on `model` (digest, path), and its shadow run."""
    session = _session(*model)
    feeds = synthetic_inputs(session, seed=seed, index=index)
    started = time.perf_counter()
    try:
        output = _first_output(session, feeds)
    except Exception as exc:
        return InferenceResult(latency_ms=(time.perf_counter() - started) * 1000, output=None, error=str(exc))
    latency_ms = (time.perf_counter() - started) * 1000
    agreed = None
    if shadow is not None:
        try:
            previous = _first_output(_session(*shadow), feeds)
            agreed = previous.shape == output.shape and embeddings_agree(output, previous)
        except Exception:
            agreed = False
    return InferenceResult(latency_ms=latency_ms, output=output, agreed=agreed)


def worker_pid() -> int:
    return os.getpid()


# --- simulator side ------------------------------------------------------------------------------


class InferenceWorker:
    """The simulator's handle on the worker process; measurements are single-flight per key."""

    def __init__(self, *, requests: int, seed: int) -> None:
        self.requests = requests
        self.seed = seed
        self._pool: ProcessPoolExecutor | None = None
        self._measured: dict[str, asyncio.Future[Measurement]] = {}
        self._agreement: dict[tuple[str, str], asyncio.Future[np.ndarray]] = {}
        self.pid: int | None = None
        self.real_requests = 0

    async def start(self) -> None:
        # spawn, not fork: the simulator has threads and an event loop a forked child must not inherit.
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        self.pid = await self._call(worker_pid)

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def measurement(self, digest: str) -> Measurement | None:
        """The measurement if it is done, else None (telemetry waits for it, it never guesses)."""
        return _finished(self._measured.get(digest))

    def agreement_ready(self, new: str, previous: str) -> np.ndarray | None:
        return _finished(self._agreement.get((new, previous)))

    async def measure(self, digest: str, path: str) -> Measurement:
        return await self._once(
            self._measured, digest, lambda: self._call(measure, path, digest, self.requests, self.seed)
        )

    async def agreement(self, new: tuple[str, str], previous: tuple[str, str]) -> np.ndarray:
        key = (new[0], previous[0])
        return await self._once(
            self._agreement, key, lambda: self._call(agreement, new, previous, self.requests, self.seed)
        )

    async def infer(
        self, model: tuple[str, str], shadow: tuple[str, str] | None, *, seed: int, index: int
    ) -> InferenceResult:
        self.real_requests += 1
        return await self._call(infer, model, shadow, seed, index)

    @property
    def measured(self) -> int:
        return sum(1 for f in self._measured.values() if _finished(f) is not None)

    async def _once(self, cache: dict[Any, asyncio.Future[T]], key: Any, make: Callable[[], Awaitable[T]]) -> T:
        fut = cache.get(key)
        if fut is None:
            fut = cache[key] = asyncio.ensure_future(make())
        try:
            return await asyncio.shield(fut)
        except Exception:
            if cache.get(key) is fut:
                del cache[key]  # let the next caller try again
            raise

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            raise RuntimeError("the inference worker is not started")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)


def _finished(fut: asyncio.Future[T] | None) -> T | None:
    """The result of a future that completed successfully, else None (pending, failed or cancelled)."""
    if fut is None or not fut.done() or fut.cancelled() or fut.exception() is not None:
        return None
    return fut.result()
