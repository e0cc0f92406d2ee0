"""Injected faults: which simulated devices misbehave, and how.

`--faults offline=5%,slow=10%,download_fail=2%,flaky=3%,corrupt=1%,crash=2%`: each entry is a
fault and either a share of the fleet (`5%`) or an exact number of devices (`3`). A device gets at
most one fault, so the shares must add up to at most 100%; which devices get which is a seeded
shuffle, the same on every run with the same seed.

Faults:
* offline: drops off the bus `offline_after` s after its first hello, for `offline_for` s: no
  hello, no status, no telemetry, and it misses desired changes; on return it reads its desired
  key and converges.
* slow: its link is `slow_factor` times slower (progress is reported as the download crawls).
* download_fail: every download attempt breaks part-way; after the bounded retries (with back-off)
  it reports `failed`.
* flaky: its first download attempt breaks part-way; the retry succeeds.
* corrupt: its copy of the bytes has one flipped byte; the real `verify_artifact` rejects it, so it
  reports `failed` and never becomes active.
* crash: crashes once in the middle of an install (after a random step) and restarts
  `crash_restart` s later; the previous model is still installed and serves while it converges.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum

from services.edge_agent.fleet.errors import FleetConfigError


class Fault(StrEnum):
    OFFLINE = "offline"
    SLOW = "slow"
    DOWNLOAD_FAIL = "download_fail"
    FLAKY = "flaky"
    CORRUPT = "corrupt"
    CRASH = "crash"


@dataclass(frozen=True, kw_only=True)
class FaultSpec:
    """One entry of a plan: a fault for a share of the fleet (0-1) or for an exact number of devices."""

    fault: Fault
    share: float | None = None
    count: int | None = None

    def devices(self, total: int) -> int:
        if self.count is not None:
            return self.count
        return round((self.share or 0.0) * total)

    def describe(self) -> str:
        return f"{self.fault}={self.count}" if self.count is not None else f"{self.fault}={(self.share or 0) * 100:g}%"


@dataclass(frozen=True)
class FaultPlan:
    """The parsed `--faults` option; empty = every device healthy."""

    specs: tuple[FaultSpec, ...] = ()

    def counts(self, total: int) -> dict[Fault, int]:
        """Devices per fault for a fleet of `total`.

        Raises:
            FleetConfigError: the plan needs more devices than the fleet has.
        """
        counts = {spec.fault: spec.devices(total) for spec in self.specs}
        if sum(counts.values()) > total:
            plan = ",".join(s.describe() for s in self.specs)
            raise FleetConfigError(
                f"the faults {plan} need {sum(counts.values())} devices but the fleet has {total}; "
                "a device gets at most one fault"
            )
        return counts

    def describe(self) -> str:
        return ",".join(s.describe() for s in self.specs) or "none"


def parse_faults(text: str) -> FaultPlan:
    """Parse `fault=N%|N,...` (empty or `none` = no faults).

    Raises:
        FleetConfigError: an unknown fault, a repeated fault, a malformed value, or shares over 100%.
    """
    text = text.strip()
    if not text or text.lower() == "none":
        return FaultPlan()
    specs: list[FaultSpec] = []
    seen: set[Fault] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, raw = part.partition("=")
        key = name.strip().lower().replace("-", "_")
        raw = raw.strip()
        if not sep or not raw:
            raise FleetConfigError(f"fault entry {part!r} is not fault=N% or fault=COUNT (e.g. offline=5%)")
        try:
            fault = Fault(key)
        except ValueError:
            known = ", ".join(f.value for f in Fault)
            raise FleetConfigError(f"unknown fault {name.strip()!r}; known faults: {known}") from None
        if fault in seen:
            raise FleetConfigError(f"fault {fault} appears twice in {text!r}")
        seen.add(fault)
        specs.append(_spec(fault, raw))
    total_share = sum(s.share or 0.0 for s in specs)
    if total_share > 1.0 + 1e-9:
        raise FleetConfigError(
            f"fault shares add up to {total_share * 100:g}% in {text!r}; a device gets at most one fault, "
            "so they must add up to at most 100%"
        )
    return FaultPlan(tuple(specs))


def _spec(fault: Fault, raw: str) -> FaultSpec:
    if raw.endswith("%"):
        try:
            percent = float(raw[:-1])
        except ValueError:
            raise FleetConfigError(f"{fault}={raw}: {raw[:-1]!r} is not a number") from None
        if not math.isfinite(percent) or not 0 <= percent <= 100:
            raise FleetConfigError(f"{fault}={raw}: a share must be between 0% and 100%")
        return FaultSpec(fault=fault, share=percent / 100)
    try:
        count = int(raw)
    except ValueError:
        raise FleetConfigError(
            f"{fault}={raw}: give a share with % (e.g. {fault}=5%) or a whole number of devices (e.g. {fault}=3)"
        ) from None
    if count < 0:
        raise FleetConfigError(f"{fault}={raw}: a number of devices cannot be negative")
    return FaultSpec(fault=fault, count=count)


def assign_faults(total: int, plan: FaultPlan, *, seed: int = 0) -> list[Fault | None]:
    """The fault of each device index (None = healthy): a seeded shuffle, cut in plan order."""
    counts = plan.counts(total)
    order = list(range(total))
    random.Random(seed).shuffle(order)
    faults: list[Fault | None] = [None] * total
    start = 0
    for fault, count in counts.items():
        for index in order[start : start + count]:
            faults[index] = fault
        start += count
    return faults
