"""Drawn telemetry: resampled from real measurements, latency scaled by the class's speed factor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from samples.tiny import write_sample
from services.edge_agent.fleet.inference import Measurement, measure
from services.edge_agent.fleet.telemetry import busy_percent, draw_window, model_ram_mb
from services.edge_agent.telemetry import LATENCY_BOUNDS_MS
from shared.messages.device import TelemetryWindow

DIGEST = "a" * 64
START = datetime(2026, 1, 1, tzinfo=UTC)


def measured(latency_ms: list[float], *, errors: list[bool] | None = None) -> Measurement:
    n = len(latency_ms)
    return Measurement(
        digest=DIGEST,
        latency_ms=np.array(latency_ms),
        errors=np.array(errors or [False] * n),
        norm_moments=np.tile([1.0, 2.0, 4.0], (n, 1)),  # one row of norm 2 per request
        value_moments=np.tile([4.0, 2.0, 1.0], (n, 1)),  # four values summing to 2, squares to 1
        load_ms=3.0,
        smoke_ms=0.5,
    )


def draw(m: Measurement, *, speed: float = 1.0, seconds: float = 60.0, seed: int = 0, **kw: object) -> TelemetryWindow:
    return draw_window(
        m,
        device_id="dev-1",
        speed_factor=speed,
        start=START,
        end=START + timedelta(seconds=seconds),
        rate=2.0,
        rng=np.random.default_rng(seed),
        ram_mb=100.0,
        **kw,  # type: ignore[arg-type]
    )


def bucket_of(latency_ms: float) -> int:
    return int(np.searchsorted(LATENCY_BOUNDS_MS, latency_ms, side="left"))


def test_latency_is_the_measured_latency_times_the_speed_factor() -> None:
    m = measured([2.0] * 50)  # every host request took 2 ms
    host, rpi5 = draw(m, speed=1.0), draw(m, speed=4.0)
    assert host.request_count == rpi5.request_count > 0  # same draw, only the latency differs
    assert host.latency.counts[bucket_of(2.0)] == host.request_count
    assert rpi5.latency.counts[bucket_of(8.0)] == rpi5.request_count


def test_requests_are_resampled_from_the_measurement() -> None:
    m = measured([1.0, 40.0])  # two kinds of request, nothing in between
    window = draw(m, speed=2.5, seconds=600)
    used = {i for i, c in enumerate(window.latency.counts) if c}
    assert used == {bucket_of(2.5), bucket_of(100.0)}
    share_slow = window.latency.counts[bucket_of(100.0)] / window.request_count
    assert 0.4 < share_slow < 0.6
    assert window.request_count == pytest.approx(1200, rel=0.15)  # Poisson(rate x seconds)


def test_output_statistics_come_from_the_measured_moments() -> None:
    window = draw(measured([1.0] * 10))
    assert window.output_stats == pytest.approx(
        {"norm_mean": 2.0, "norm_std": 0.0, "value_mean": 0.5, "value_std": 0.0}
    )


def test_failed_requests_count_as_errors_and_add_no_output() -> None:
    window = draw(measured([1.0] * 4, errors=[True] * 4))
    assert window.error_count == window.request_count > 0
    assert window.output_stats == {}


def test_shadow_agreement_is_the_measured_agreement_of_the_drawn_requests() -> None:
    m = measured([1.0] * 100)
    agree_all = draw(m, shadow=("b" * 64, np.ones(100, dtype=bool)))
    assert agree_all.shadow is not None and agree_all.shadow.agreement_rate == 1.0
    assert agree_all.shadow.previous_digest == "b" * 64 and agree_all.shadow.compared == agree_all.request_count
    half = draw(m, seconds=600, shadow=("b" * 64, np.arange(100) % 2 == 0))
    assert half.shadow is not None and 0.4 < half.shadow.agreement_rate < 0.6
    assert draw(m).shadow is None


def test_busy_share_and_memory_estimate() -> None:
    window = draw(measured([5.0] * 10), speed=2.0, seconds=60)
    assert window.cpu_percent == pytest.approx(busy_percent(10.0 * window.request_count, 60.0))
    assert busy_percent(120_000, 60) == 100.0 and busy_percent(1.0, 0) == 0.0
    assert model_ram_mb(2 * 1024**2) == 68.0


def test_measuring_the_tiny_model_for_real(tmp_path: Path) -> None:
    model, _ = write_sample(tmp_path)
    m = measure(str(model), DIGEST, requests=30, seed=0)
    assert m.failure is None and m.requests == 30 and not m.errors.any()
    assert (m.latency_ms > 0).all() and m.load_ms > 0
    window = draw(m, speed=4.0)
    assert window.output_stats["norm_mean"] == pytest.approx(1.0, abs=1e-5)  # the model L2-normalises


def test_a_model_that_does_not_load_is_a_failed_measurement(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    m = measure(str(junk), DIGEST, requests=10, seed=0)
    assert m.failure is not None and "cannot load" in m.failure
