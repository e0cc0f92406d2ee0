"""The telemetry service's contract: what it concludes from the device telemetry stream.

Devices publish windows (`shared.messages.device.TelemetryWindow`); the telemetry service
aggregates them per model digest and announces drift as an event, so the rollout service and
other systems react to a conclusion without re-reading every device's stream.
"""

from __future__ import annotations

from pydantic import AwareDatetime, Field, FiniteFloat, model_validator

from shared.messages.common import SHA256_HEX
from shared.messages.envelope import Message, register_message


@register_message
class DriftDetected(Message):
    """A model's output or behaviour statistic moved away from its reference beyond the threshold.

    `reference` is the digest's baseline for the metric (e.g. over its first windows once active),
    `current` is over `[window_start, window_end)` across every device running the digest, and
    `score` is the method's distance between the two; higher means further apart.
    """

    TYPE = "drift.detected"

    model_digest: str = Field(pattern=SHA256_HEX)
    metric: str = Field(
        min_length=1, max_length=72, description="what drifted: output.<stat>, error_rate, latency_p95_ms, ..."
    )
    method: str = Field(min_length=1, max_length=64, description="how score was computed, e.g. zscore, psi")
    reference: FiniteFloat = Field(description="the metric's reference value")
    current: FiniteFloat = Field(description="the metric's value in this window")
    score: FiniteFloat
    threshold: FiniteFloat = Field(description="score at or over this is drift")
    devices: int = Field(ge=1, description="devices running the digest that contributed to the window")
    window_start: AwareDatetime
    window_end: AwareDatetime

    @model_validator(mode="after")
    def _window_and_score(self) -> DriftDetected:
        if self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        if self.score < self.threshold:
            raise ValueError(f"score {self.score} is under threshold {self.threshold}: that is not drift")
        return self
