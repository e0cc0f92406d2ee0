"""Drawn telemetry: resampled from real measurements, latency scaled by the class's speed factor, and
shaped exactly as the agent's recorder shapes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samples.tiny import write_sample
from services.edge_agent.fleet.inference import Measurement, measure, measure_shifted, similarities
from services.edge_agent.fleet.telemetry import busy_percent, draw_window, exponential_histogram, model_ram_mb
from services.edge_agent.telemetry import LATENCY_SCALE, REFERENCE_REQUESTS
from shared.histogram import ExponentialHistogram, bucket_index
from shared.messages.device import SIMILARITY_BOUNDS, TelemetryWindow

DIGEST = "a" * 64
START = datetime(2026, 1, 1, tzinfo=UTC)


def measured(
    latency_ms: list[float], *, errors: list[bool] | None = None, similarity: list[float] | None = None
) -> Measurement:
    n = len(latency_ms)
    return Measurement(
        digest=DIGEST,
        latency_ms=np.array(latency_ms),
        errors=np.array(errors or [False] * n),
        norm_moments=np.tile([1.0, 2.0, 0.0], (n, 1)),  # one row of norm 2 per request
        value_moments=np.tile([4.0, 0.5, 1.0], (n, 1)),  # four values of mean 0.5, squared deviations summing to 1
        similarity=np.array(similarity if similarity is not None else [0.96] * n),
        centroid=None,
        load_ms=3.0,
        smoke_ms=0.5,
    )


def draw(m: Measurement, *, speed: float = 1.0, seconds: float = 60.0, seed: int = 0, **kw: object) -> TelemetryWindow:
    options: dict[str, object] = {"reference_served": REFERENCE_REQUESTS} | kw
    return draw_window(
        m,
        device_id="dev-1",
        device_class="rpi5",
        speed_factor=speed,
        start=START,
        end=START + timedelta(seconds=seconds),
        rate=2.0,
        rng=np.random.default_rng(seed),
        ram_mb=100.0,
        **options,  # type: ignore[arg-type]
    )


def buckets(window: TelemetryWindow) -> dict[int, int]:
    """Bucket index -> count, at the window's scale."""
    lat = window.latency
    return {lat.offset + i: c for i, c in enumerate(lat.counts) if c}


def test_latency_is_the_measured_latency_times_the_speed_factor() -> None:
    m = measured([2.0] * 50)  # every host request took 2 ms
    host, rpi5 = draw(m, speed=1.0), draw(m, speed=4.0)
    assert host.request_count == rpi5.request_count > 0  # same draw, only the latency differs
    assert host.latency.scale == rpi5.latency.scale == LATENCY_SCALE
    assert buckets(host) == {bucket_index(2.0, LATENCY_SCALE): host.request_count}
    assert buckets(rpi5) == {bucket_index(8.0, LATENCY_SCALE): rpi5.request_count}


def test_requests_are_resampled_from_the_measurement() -> None:
    m = measured([1.0, 40.0])  # two kinds of request, nothing in between
    window = draw(m, speed=2.5, seconds=600)
    slow = bucket_index(100.0, LATENCY_SCALE)
    assert set(buckets(window)) == {bucket_index(2.5, LATENCY_SCALE), slow}
    assert 0.4 < buckets(window)[slow] / window.request_count < 0.6
    assert window.request_count == pytest.approx(1200, rel=0.15)  # Poisson(rate x seconds)
    assert window.latency.histogram().quantile(0.99) == pytest.approx(100.0, rel=0.022)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    values=st.lists(
        st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=1e7, allow_nan=False, allow_infinity=False)),
        min_size=1,
        max_size=300,
    ),
    scale=st.integers(min_value=-2, max_value=8),
)
def test_the_vectorised_histogram_is_what_record_gives(values: list[float], scale: int) -> None:
    one_by_one = ExponentialHistogram(scale=scale)
    for value in values:
        one_by_one.record(value)
    assert exponential_histogram(np.array(values), scale=scale) == one_by_one  # wide spreads downscale too


def test_the_vectorised_histogram_on_boundaries_and_a_wide_spread() -> None:
    rng = np.random.default_rng(7)
    boundaries = [2.0 ** (i / 16) for i in range(-64, 64)]  # every value exactly on a boundary at scale 4
    wide = list(rng.lognormal(0.0, 4.0, size=5000))  # needs fewer than 160 buckets only at a coarser scale
    for values in (boundaries, wide):
        one_by_one = ExponentialHistogram(scale=LATENCY_SCALE)
        for value in values:
            one_by_one.record(float(value))
        assert exponential_histogram(np.array(values), scale=LATENCY_SCALE) == one_by_one
    assert one_by_one.scale < LATENCY_SCALE
    with pytest.raises(ValueError, match="finite values >= 0"):
        exponential_histogram(np.array([1.0, float("nan")]), scale=LATENCY_SCALE)


def test_output_moments_come_from_the_measured_moments_with_their_counts() -> None:
    window = draw(measured([1.0] * 10))
    served = window.request_count - window.error_count
    norm, value = window.outputs["norm"], window.outputs["value"]
    assert (norm.count, norm.mean, norm.variance) == (served, 2.0, 0.0)
    assert value.count == 4 * served and value.mean == pytest.approx(0.5) and value.variance == pytest.approx(0.25)


def test_failed_requests_count_as_errors_and_add_no_output() -> None:
    window = draw(measured([1.0] * 4, errors=[True] * 4))
    assert window.error_count == window.request_count > 0
    assert window.outputs == {} and window.similarity is None


def test_similarities_are_binned_from_the_drawn_requests() -> None:
    window = draw(measured([1.0] * 2, similarity=[0.96, 0.2]), seconds=600)
    assert window.similarity is not None and window.similarity.reference_requests == REFERENCE_REQUESTS
    counts = window.similarity.counts
    assert sum(counts) == window.request_count
    assert counts[1] + counts[SIMILARITY_BOUNDS.index(0.97)] == sum(counts)  # (0, 0.5] and (0.95, 0.97]
    assert 0.4 < counts[1] / sum(counts) < 0.6


def test_a_device_builds_its_reference_before_it_counts_similarities() -> None:
    m = measured([1.0] * 10)
    first = draw(m, seconds=10, reference_served=0)  # ~20 requests: all go into the reference
    assert first.similarity is None
    late = draw(m, seconds=60, reference_served=REFERENCE_REQUESTS - 10)
    assert late.similarity is not None and sum(late.similarity.counts) == late.request_count - 10


def test_the_window_names_the_class_and_the_rollout_wave() -> None:
    window = draw(measured([1.0] * 10), rollout_id="r1", wave=2)
    assert (window.device_class, window.rollout_id, window.wave) == ("rpi5", "r1", 2)
    assert draw(measured([1.0] * 10)).rollout_id is None


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


def test_the_centroid_is_of_the_first_reference_rows_or_all() -> None:
    rows: list[np.ndarray | None] = [*[np.array([1.0, 0.0])] * REFERENCE_REQUESTS, *[np.array([0.0, 3.0])] * 10]
    sims, centroid = similarities([*rows, None])
    assert centroid is not None and centroid.tolist() == [1.0, 0.0]  # the later rows are not in it
    assert sims[0] == 1.0 and sims[REFERENCE_REQUESTS] == 0.0 and np.isnan(sims[-1])
    _, few = similarities([np.array([1.0, 0.0]), np.array([0.0, 2.0])])
    assert few is not None and few == pytest.approx([2**-0.5, 2**-0.5])


def test_measuring_the_tiny_model_for_real(tmp_path: Path) -> None:
    model, _ = write_sample(tmp_path)
    m = measure(str(model), DIGEST, requests=30, seed=0)
    assert m.failure is None and m.requests == 30 and not m.errors.any() and not m.shifted
    assert (m.latency_ms > 0).all() and m.load_ms > 0
    assert m.centroid is not None and not np.isnan(m.similarity).any()
    window = draw(m, speed=4.0)
    assert window.outputs["norm"].mean == pytest.approx(1.0, abs=1e-5)  # the model L2-normalises
    assert window.similarity is not None and sum(window.similarity.counts) == window.request_count


def test_shifted_inputs_lower_the_similarity_to_the_reference(tmp_path: Path) -> None:
    """Real inference on token ids from a narrow band of the vocabulary, against the centroid of the
    unshifted measurement: the outputs really moved away from the reference."""
    model, _ = write_sample(tmp_path)
    base = measure(str(model), DIGEST, requests=200, seed=0)
    shifted = measure_shifted(str(model), DIGEST, 200, 3, base.centroid)
    assert shifted.failure is None and shifted.shifted and not shifted.errors.any()
    assert np.median(shifted.similarity) < np.median(base.similarity) - 0.1
    assert np.quantile(shifted.similarity, 0.9) < np.quantile(base.similarity, 0.9)
    before, after = draw(base, seconds=3000), draw(shifted, seconds=3000)
    assert before.similarity is not None and after.similarity is not None

    def mean_bin(counts: list[int]) -> float:
        return float(np.dot(np.arange(len(counts)), counts) / sum(counts))

    assert mean_bin(after.similarity.counts) < mean_bin(before.similarity.counts)
    assert before.outputs["norm"].mean == pytest.approx(after.outputs["norm"].mean, abs=1e-5)  # the norm says nothing


def test_a_model_that_does_not_load_is_a_failed_measurement(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    m = measure(str(junk), DIGEST, requests=10, seed=0)
    assert m.failure is not None and "cannot load" in m.failure
