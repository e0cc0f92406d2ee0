"""The CLI notations of gates, waves and durations (shared/notation.py) as tables."""

from __future__ import annotations

import pytest

from shared.notation import OptionError, parse_duration, parse_gate, parse_waves


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("error_rate<=0.05", ("error_rate", "<=", 0.05, None, 100)),
        ("latency_p95_ms<=+10%", ("latency_p95_ms", "<=", 1.10, "ratio", 100)),
        ("latency_p95_ms <= -5%", ("latency_p95_ms", "<=", 0.95, "ratio", 100)),
        ("latency_p95_ms<=+2ms", ("latency_p95_ms", "<=", 2.0, "difference", 100)),
        ("latency_p99_ms<250ms", ("latency_p99_ms", "<", 250.0, None, 100)),
        ("latency_p95_ms<=x1.1", ("latency_p95_ms", "<=", 1.1, "mann_whitney", 100)),
        ("shadow_agreement>=0.98@500", ("shadow_agreement", ">=", 0.98, None, 500)),
        ("output.norm>=0.9", ("output.norm", ">=", 0.9, None, 100)),
    ],
)
def test_gates_parse_into_the_contract(text: str, expected: tuple[object, ...]) -> None:
    gate = parse_gate(text)
    got = (gate.metric, gate.comparator, gate.threshold, gate.compare_to_baseline, gate.min_samples)
    assert got[:2] == expected[:2] and got[3:] == expected[3:]
    assert gate.threshold == pytest.approx(expected[2])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("error_rate=0.05", "use METRIC OP VALUE"),
        ("latency_p95_ms<=10%", "write \\+10% or -5%"),
        ("error_rate<=5ms", "ms is for latency metrics"),
        ("cpu_percent>=x1.1", "mann_whitney compares latency"),
        ("latency_p95_ms>=x1.1", "use < or <="),
        ("colour<=1", "unknown gate metric"),
    ],
)
def test_bad_gates_say_why(text: str, reason: str) -> None:
    with pytest.raises(OptionError, match=reason):
        parse_gate(text)


def test_waves_and_durations() -> None:
    assert [w.percent for w in parse_waves("1,10,50,100")] == [1, 10, 50, 100]
    assert parse_duration("90") == parse_duration("90s") == 90 and parse_duration("5m") == 300
    assert parse_duration("1.5h") == 5400
    for bad, reason in (("10,5,100", "strictly increasing"), ("10,50", "must be 100"), ("a,b", "percentages")):
        with pytest.raises(OptionError, match=reason):
            parse_waves(bad)
    with pytest.raises(OptionError, match="90s, 5m, 1h"):
        parse_duration("soon")
