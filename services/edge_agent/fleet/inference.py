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

Shifted inputs (`--input-shift-after`, to test drift detection on something real): token ids from a
narrow band of the vocabulary, [500, 550) — as if a device's users had all turned to one topic —
and float inputs offset by +1. Masks and token types are unchanged. A shifted measurement is real
inference on those inputs, its similarities taken against the reference centroid of the unshifted
measurement: the reference a device built before its inputs shifted.
"""

from __future__ import annotations

import asyncio
import math
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
from services.edge_agent.telemetry import REFERENCE_REQUESTS, embedding_row, embeddings_agree
from shared.output_statistics import output_moments

T = TypeVar("T")
WARMUP_RUNS = 5
MIN_SEQUENCE, MAX_SEQUENCE = 8, 32
TOKEN_IDS = (1, 1000)  # [low, high) of synthetic token ids
SHIFTED_TOKEN_IDS = (500, 550)  # a narrow band of the same vocabulary (so any model above 550 ids takes it)
SHIFTED_FLOAT_OFFSET = 1.0


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """One artifact measured on this host: per-request arrays, aligned by request index.

    Output moments are kept per request (count, mean and sum of squared deviations of the row norms
    and of the values of the first output), so a window can be drawn by resampling requests and
    merging their moments, which gives what `WindowRecorder` computes on those requests.

    `similarity` is each request's cosine similarity to `centroid` (NaN: failed, or the output is not
    an embedding): the device's rule, `telemetry.ReferenceCentroid`, applied to the measured outputs
    (the mean of the first `REFERENCE_REQUESTS` normalised rows, or of all of them if fewer), or, for
    a shifted measurement, the centroid of the unshifted one. Only the simulator holds it; a window
    carries nothing but binned counts of the similarities.
    """

    digest: str
    latency_ms: np.ndarray
    errors: np.ndarray
    norm_moments: np.ndarray
    value_moments: np.ndarray
    similarity: np.ndarray
    centroid: np.ndarray | None
    load_ms: float
    smoke_ms: float
    shifted: bool = False
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


def synthetic_inputs(
    session: ort.InferenceSession, *, seed: int, index: int, shifted: bool = False
) -> dict[str, np.ndarray]:
    """Request `index` of stream `seed`, shaped by the graph's input specs (shifted: see the module)."""
    rng = np.random.default_rng([seed, index, 1] if shifted else [seed, index])
    low, high = SHIFTED_TOKEN_IDS if shifted else TOKEN_IDS
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
            feeds[spec.name] = rng.integers(low, high, size=dims).astype(dtype)
        else:
            offset = SHIFTED_FLOAT_OFFSET if shifted else 0.0
            feeds[spec.name] = (rng.standard_normal(dims) + offset).astype(dtype)
    return feeds


def _first_output(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(session.run(None, feeds)[0])


def _moments(output: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(count, mean, m2) of the row norms and of the values, as WindowRecorder takes them."""
    norms, m_values = output_moments(output)
    return (norms.count, norms.mean, norms.m2), (m_values.count, m_values.mean, m_values.m2)


def similarities(
    rows: list[np.ndarray | None], reference: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Each row's cosine similarity to `reference`, or, without one, to the centroid the device rule
    (`telemetry.ReferenceCentroid`) makes of these rows: the mean of the first `REFERENCE_REQUESTS`
    normalised rows of the first row's dimension, or of all of them if fewer, normalised.

    Args:
        rows: per request, its embedding row (`telemetry.embedding_row`); None if it has none.
        reference: a normalised centroid to compare against (a shifted measurement: the unshifted one's).

    Returns:
        The per-request similarities (NaN where there is none) and the normalised centroid (None if
        no row has a direction).
    """
    units: dict[int, np.ndarray] = {}
    for i, row in enumerate(rows):
        norm = float(np.linalg.norm(row)) if row is not None else 0.0
        if row is not None and math.isfinite(norm) and norm > 0:
            units[i] = row / norm
    if reference is None and units:
        shape = next(iter(units.values())).shape
        centroid = np.mean([u for u in units.values() if u.shape == shape][:REFERENCE_REQUESTS], axis=0)
        length = float(np.linalg.norm(centroid))
        reference = centroid / length if length > 0 else None
    sims = np.full(len(rows), np.nan)
    if reference is not None:
        for i, unit in units.items():
            if unit.shape == reference.shape:
                sims[i] = float(np.clip(unit @ reference, -1.0, 1.0))
    return sims, reference


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
    return _run_requests(session, digest, requests, seed, shifted=False, load_ms=load_ms, smoke_ms=smoke_ms)


def measure_shifted(path: str, digest: str, requests: int, seed: int, reference: np.ndarray | None) -> Measurement:
    """`requests` requests of the artifact on shifted inputs (see the module docstring), their
    similarities against `reference` (the unshifted measurement's centroid). Load and smoke times
    are not measured again (0): the shifted measurement only supplies a device's requests."""
    try:
        session = _session(digest, path)
    except Exception as exc:  # onnxruntime raises untyped errors for any load failure
        return _failed(digest, f"onnxruntime cannot load the model: {exc}", shifted=True)
    return _run_requests(session, digest, requests, seed, shifted=True, reference=reference)


def _run_requests(
    session: ort.InferenceSession,
    digest: str,
    requests: int,
    seed: int,
    *,
    shifted: bool,
    reference: np.ndarray | None = None,
    load_ms: float = 0.0,
    smoke_ms: float = 0.0,
) -> Measurement:
    """Warm up, then time `requests` single requests; their outputs' moments and similarities."""
    for i in range(WARMUP_RUNS):
        _first_output(session, synthetic_inputs(session, seed=seed + 1, index=i, shifted=shifted))
    latency = np.zeros(requests)
    errors = np.zeros(requests, dtype=bool)
    norms = np.zeros((requests, 3))
    values = np.zeros((requests, 3))
    rows: list[np.ndarray | None] = [None] * requests
    for i in range(requests):
        feeds = synthetic_inputs(session, seed=seed, index=i, shifted=shifted)
        started = time.perf_counter()
        try:
            output = _first_output(session, feeds)
        except Exception:
            errors[i] = True
            latency[i] = (time.perf_counter() - started) * 1000
            continue
        latency[i] = (time.perf_counter() - started) * 1000
        norms[i], values[i] = _moments(output)
        rows[i] = embedding_row(output)
    similarity, centroid = similarities(rows, reference)
    return Measurement(
        digest=digest,
        latency_ms=latency,
        errors=errors,
        norm_moments=norms,
        value_moments=values,
        similarity=similarity,
        centroid=centroid,
        load_ms=load_ms,
        smoke_ms=smoke_ms,
        shifted=shifted,
    )


def _failed(digest: str, reason: str, *, load_ms: float = 0.0, shifted: bool = False) -> Measurement:
    zeros = np.zeros(0)
    return Measurement(
        digest=digest,
        latency_ms=zeros,
        errors=zeros.astype(bool),
        norm_moments=np.zeros((0, 3)),
        value_moments=np.zeros((0, 3)),
        similarity=zeros,
        centroid=None,
        load_ms=load_ms,
        smoke_ms=0.0,
        shifted=shifted,
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


def infer(
    model: tuple[str, str], shadow: tuple[str, str] | None, seed: int, index: int, shifted: bool = False
) -> InferenceResult:
    """One real request of a real-inference device on `model` (digest, path), and its shadow run."""
    session = _session(*model)
    feeds = synthetic_inputs(session, seed=seed, index=index, shifted=shifted)
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
        self._shifted: dict[str, asyncio.Future[Measurement]] = {}
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

    def shifted_measurement(self, digest: str) -> Measurement | None:
        """The measurement on shifted inputs if it is done, else None."""
        return _finished(self._shifted.get(digest))

    def agreement_ready(self, new: str, previous: str) -> np.ndarray | None:
        return _finished(self._agreement.get((new, previous)))

    async def measure(self, digest: str, path: str) -> Measurement:
        return await self._once(
            self._measured, digest, lambda: self._call(measure, path, digest, self.requests, self.seed)
        )

    async def measure_shifted(self, digest: str, path: str) -> Measurement:
        """The artifact on shifted inputs, against the centroid of its unshifted measurement."""

        async def run() -> Measurement:
            base = await self.measure(digest, path)
            if base.failure:
                return base
            return await self._call(measure_shifted, path, digest, self.requests, self.seed + 3, base.centroid)

        return await self._once(self._shifted, digest, run)

    async def agreement(self, new: tuple[str, str], previous: tuple[str, str]) -> np.ndarray:
        key = (new[0], previous[0])
        return await self._once(
            self._agreement, key, lambda: self._call(agreement, new, previous, self.requests, self.seed)
        )

    async def infer(
        self, model: tuple[str, str], shadow: tuple[str, str] | None, *, seed: int, index: int, shifted: bool = False
    ) -> InferenceResult:
        self.real_requests += 1
        return await self._call(infer, model, shadow, seed, index, shifted)

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
