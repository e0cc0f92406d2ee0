"""The compact notations of `slmops rollout start` and of blueprint files, parsed into the
contract's types (pure, table-tested), so both accept exactly the same gates.

Gates, as `METRIC OP VALUE[@MIN_SAMPLES]`:

    error_rate<=0.05            a fixed threshold on the wave
    latency_p95_ms<=+10%        the wave at most 10 % above the devices still on the old model (ratio 1.10)
    latency_p95_ms<=+2ms        at most 2 ms above them (difference)
    latency_p95_ms<=x1.1        not slower than 1.1 x them at 95 % (Mann-Whitney / Hodges-Lehmann)
    shadow_agreement>=0.98@500  with at least 500 requests behind it

Waves as cumulative percentages (`1,10,50,100`); durations as `90`, `90s`, `5m` or `1h`.
"""

from __future__ import annotations

import re

from pydantic import ValidationError

from shared.errors import InvalidRequest
from shared.messages.rollout import Gate, Wave

_GATE = re.compile(
    r"^\s*(?P<metric>[A-Za-z0-9_.]+)\s*(?P<op><=|>=|<|>)\s*(?P<value>[+\-x]?[0-9]*\.?[0-9]+)(?P<unit>%|ms)?"
    r"(?:@(?P<min>[0-9]+))?\s*$"
)
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(s|m|h)?\s*$")
_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600}


class OptionError(InvalidRequest):
    """A notation that does not parse; the message shows the accepted forms."""


def parse_gate(text: str) -> Gate:
    """`latency_p95_ms<=+10%` and friends (the module docstring) -> Gate.

    Raises:
        OptionError: not one of the forms, or a gate the contract refuses (with its reason).
    """
    match = _GATE.match(text)
    if match is None:
        raise OptionError(
            f"gate {text!r}: use METRIC OP VALUE, e.g. error_rate<=0.05, latency_p95_ms<=+10%, "
            "latency_p95_ms<=+2ms, latency_p95_ms<=x1.1 (optionally @MIN_SAMPLES)"
        )
    value, unit = match["value"], match["unit"]
    fields: dict[str, object] = {"metric": match["metric"], "comparator": match["op"]}
    if match["min"]:
        fields["min_samples"] = int(match["min"])
    if value.startswith("x"):
        if unit:
            raise OptionError(f"gate {text!r}: x{value[1:]} is a ratio; it takes no unit")
        fields |= {"threshold": float(value[1:]), "compare_to_baseline": "mann_whitney"}
    elif unit == "%":
        if value[0] not in "+-":
            raise OptionError(f"gate {text!r}: a percentage compares with the baseline: write +10% or -5%")
        fields |= {"threshold": 1 + float(value) / 100, "compare_to_baseline": "ratio"}
    elif value[0] in "+-":
        fields |= {"threshold": float(value), "compare_to_baseline": "difference"}
    else:
        if unit == "ms" and not match["metric"].startswith("latency_"):
            raise OptionError(f"gate {text!r}: ms is for latency metrics")
        fields["threshold"] = float(value)
    try:
        return Gate.model_validate(fields)
    except ValidationError as exc:
        # pydantic prefixes a validator's ValueError with "Value error, ": noise for the reader.
        raise OptionError(f"gate {text!r}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None


def parse_waves(text: str) -> list[Wave]:
    """`1,10,50,100` -> waves (cumulative percentages, increasing, ending at 100: the contract's rule).

    Raises:
        OptionError: not numbers separated by commas.
    """
    try:
        shares = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise OptionError(f"waves {text!r}: cumulative percentages separated by commas, e.g. 1,10,50,100") from None
    if not shares:
        raise OptionError("waves: at least one percentage, the last 100")
    if any(b <= a for a, b in zip(shares, shares[1:], strict=False)):
        raise OptionError(f"waves {text!r}: the percentages must be strictly increasing")
    if shares[-1] != 100:
        raise OptionError(f"waves {text!r}: the last wave must be 100 percent")
    try:
        return [Wave(percent=p) for p in shares]
    except ValidationError as exc:
        raise OptionError(f"waves {text!r}: {exc.errors()[0]['msg']}") from None


def parse_duration(text: str) -> float:
    """`90`, `90s`, `5m`, `1h` -> seconds.

    Raises:
        OptionError: any other form.
    """
    match = _DURATION.match(text)
    if match is None:
        raise OptionError(f"duration {text!r}: a number of seconds, or with s, m or h (90s, 5m, 1h)")
    return float(match[1]) * _UNITS[match[2]]
