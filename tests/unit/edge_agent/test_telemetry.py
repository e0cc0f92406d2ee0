"""The recorder's window (schema 2): quantiles within the stated bound, moments that merge with their
counts, and similarities against a reference that outlives windows."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.edge_agent.telemetry import (
    LATENCY_SCALE,
    REFERENCE_REQUESTS,
    ReferenceCentroid,
    WindowRecorder,
    embedding_row,
    similarity_bin,
)
from shared.histogram import ExponentialHistogram, relative_error
from shared.messages.device import SIMILARITY_BOUNDS, TelemetryWindow
from shared.output_statistics import Moments

DIGEST = "d" * 64
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def close(recorder: WindowRecorder, *, seconds: float = 10.0) -> TelemetryWindow:
    return recorder.close(
        device_id="dev-1",
        device_class="rpi5",
        ended=recorder.started + timedelta(seconds=seconds),
        cpu_percent=5.0,
        ram_mb=80.0,
    )


def exact(values: list[float], q: float) -> float:
    """The value at rank ceil(q * n), what `ExponentialHistogram.quantile` approximates."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@pytest.mark.parametrize("sigma", [0.1, 0.8, 3.0])  # narrow, typical, and so wide the histogram downscales
def test_p50_p95_p99_from_the_window_are_within_the_stated_bound(sigma: float) -> None:
    latencies = list(np.random.default_rng(1).lognormal(np.log(12.0), sigma, size=2000))
    recorder = WindowRecorder(digest=DIGEST, started=T0)
    for latency in latencies:
        recorder.record(float(latency), error=False)
    window = close(recorder)
    histogram = window.latency.histogram()
    assert window.latency.scale <= LATENCY_SCALE and histogram.count == window.request_count == 2000
    for q in (0.5, 0.95, 0.99):
        assert histogram.quantile(q) == pytest.approx(exact(latencies, q), rel=relative_error(histogram.scale))
    if sigma < 1:
        assert window.latency.scale == LATENCY_SCALE  # 2.2 %: a 10 % regression is visible


def test_errors_count_in_the_latency_and_not_in_the_outputs() -> None:
    recorder = WindowRecorder(digest=DIGEST, started=T0)
    recorder.record(3.0, output=np.ones((1, 4), np.float32))
    recorder.record(9.0, error=True)
    window = close(recorder)
    assert (window.request_count, window.error_count) == (2, 1) and window.latency.histogram().count == 2
    assert window.outputs["norm"].count == 1 and window.outputs["value"].count == 4


def test_output_moments_are_per_row_norms_and_per_element_values() -> None:
    rng = np.random.default_rng(2)
    outputs = [rng.standard_normal((int(rng.integers(1, 4)), 8)).astype(np.float32) for _ in range(50)]
    recorder = WindowRecorder(digest=DIGEST, started=T0)
    for output in outputs:
        recorder.record(1.0, output=output)
    window = close(recorder)
    rows = np.concatenate(outputs).astype(np.float64)
    norms = np.linalg.norm(rows, axis=1)
    norm, value = window.outputs["norm"], window.outputs["value"]
    assert (
        norm.count == len(rows)
        and norm.mean == pytest.approx(norms.mean())
        and norm.variance == pytest.approx(norms.var())
    )
    assert (
        value.count == rows.size
        and value.mean == pytest.approx(rows.mean())
        and value.variance == pytest.approx(rows.var())
    )


def test_rows_with_nan_are_left_out_so_the_window_stays_valid() -> None:
    recorder = WindowRecorder(digest=DIGEST, started=T0)
    recorder.record(1.0, output=np.array([[np.nan, 1.0], [3.0, 4.0]]))
    norm = close(recorder).outputs["norm"]
    assert (norm.count, norm.mean, norm.variance) == (1, 5.0, 0.0)


def test_moments_merge_as_if_every_value_were_in_one() -> None:
    rng = np.random.default_rng(3)
    parts = [rng.normal(1.0, 1e-6, size=n) for n in (1, 7, 300, 2)]  # ~1.0 with a tiny variance: cancellation-prone
    merged = Moments()
    for part in parts:
        one = Moments()
        one.add(part)
        merged.merge(one)
    everything = np.concatenate(parts)
    assert merged.count == everything.size and merged.mean == pytest.approx(everything.mean(), rel=1e-12)
    assert merged.variance == pytest.approx(everything.var(), rel=1e-6)
    groups = np.array([[p.size, p.mean(), np.square(p - p.mean()).sum()] for p in parts])
    grouped = Moments.of_groups(groups)
    assert grouped.count == merged.count and grouped.mean == pytest.approx(merged.mean, rel=1e-12)
    assert grouped.variance == pytest.approx(merged.variance, rel=1e-6)
    assert Moments().wire() is None and Moments.of_groups(np.zeros((0, 3))).count == 0


def test_the_window_names_the_device_class_and_the_rollout_wave() -> None:
    window = close(WindowRecorder(digest=DIGEST, started=T0, rollout_id="r1", wave=3))
    assert (window.device_class, window.rollout_id, window.wave) == ("rpi5", "r1", 3)
    by_hand = close(WindowRecorder(digest=DIGEST, started=T0))
    assert (by_hand.rollout_id, by_hand.wave) == (None, None)
    half = close(WindowRecorder(digest=DIGEST, started=T0, rollout_id="r1"))  # a desired state without its wave
    assert (half.rollout_id, half.wave) == (None, None)  # the contract wants both or neither


def unit(rng: np.random.Generator, around: np.ndarray, spread: float) -> np.ndarray:
    row = around + spread * rng.standard_normal(around.size)
    return (row / np.linalg.norm(row)).astype(np.float32)[None, :]


def test_the_reference_survives_window_boundaries() -> None:
    rng = np.random.default_rng(4)
    direction = np.ones(16) / 4.0
    reference = ReferenceCentroid()
    windows = []
    for _ in range(4):  # 4 windows of 40 requests: the reference completes in the second one
        recorder = WindowRecorder(digest=DIGEST, started=T0, reference=reference)
        for _ in range(40):
            recorder.record(1.0, output=unit(rng, direction, 0.01))
        windows.append(close(recorder))
    assert windows[0].similarity is None and reference.complete and reference.seen == REFERENCE_REQUESTS
    counted = [sum(w.similarity.counts) if w.similarity else 0 for w in windows]
    assert counted == [0, 2 * 40 - REFERENCE_REQUESTS, 40, 40]
    assert all(w.similarity is None or w.similarity.reference_requests == REFERENCE_REQUESTS for w in windows)
    for window in windows[1:]:
        assert window.similarity is not None and window.similarity.counts[-1] == sum(window.similarity.counts)


def test_similarity_falls_when_the_outputs_turn_away_from_the_reference() -> None:
    rng = np.random.default_rng(5)
    reference = ReferenceCentroid(size=8)
    old, new = np.eye(16)[0], np.eye(16)[0] + 0.55 * np.eye(16)[1]  # cos = 0.876
    warmup = WindowRecorder(digest=DIGEST, started=T0, reference=reference)
    for _ in range(8):
        warmup.record(1.0, output=unit(rng, old, 0.002))
    recorder = WindowRecorder(digest=DIGEST, started=T0, reference=reference)
    for _ in range(30):
        recorder.record(1.0, output=unit(rng, new, 0.002))
    window = close(recorder)
    assert window.similarity is not None and window.similarity.reference_requests == 8
    assert window.similarity.counts[SIMILARITY_BOUNDS.index(0.9)] == 30  # all in (0.85, 0.9]


def test_only_embedding_like_outputs_are_compared() -> None:
    assert embedding_row(np.ones((2, 8), np.float32)) is not None
    assert embedding_row(np.ones(8, np.float32)) is not None
    assert embedding_row(np.ones((1, 4, 8), np.float32)) is None  # token-level
    assert embedding_row(np.ones((1, 8), np.int64)) is None and embedding_row(np.ones((1, 1))) is None
    reference = ReferenceCentroid(size=1)
    assert reference.observe(np.zeros(8)) is None and reference.seen == 0  # no direction: skipped
    assert reference.observe(np.ones(8)) is None and reference.complete
    assert reference.observe(np.ones(4)) is None  # another dimension
    assert reference.observe(np.ones(8) * 3) == pytest.approx(1.0)


def test_one_similarity_per_served_request_even_for_a_batch() -> None:
    reference = ReferenceCentroid(size=1)
    recorder = WindowRecorder(digest=DIGEST, started=T0, reference=reference)
    for _ in range(3):
        recorder.record(1.0, output=np.ones((5, 8), np.float32))
    window = close(recorder)
    assert window.similarity is not None and sum(window.similarity.counts) == 2  # the first built the reference
    assert window.outputs["norm"].count == 15


def test_similarity_bins_follow_the_contract() -> None:
    bounds = SIMILARITY_BOUNDS
    assert similarity_bin(-1.0) == 0 and similarity_bin(bounds[0]) == 0
    assert similarity_bin(bounds[1]) == 1 and similarity_bin(np.nextafter(bounds[1], 2.0)) == 2
    assert similarity_bin(1.0) == len(bounds)
    sims = np.random.default_rng(6).uniform(-1, 1, 1000)
    assert [similarity_bin(s) for s in sims] == np.searchsorted(bounds, sims, side="left").tolist()


def test_the_latency_histogram_is_the_shared_one_at_scale_4() -> None:
    recorder = WindowRecorder(digest=DIGEST, started=T0)
    assert recorder.latency == ExponentialHistogram(scale=LATENCY_SCALE)
