"""The class mix: `rpi5=60,jetson=30,gateway=10` → which class each of N devices is.

Weights are relative (they need not sum to 100). Counts are rounded by largest remainder so they
add up to N exactly, and classes are interleaved evenly over device indices, so every connection,
every prefix of the fleet and the real-inference sample all see every class.
"""

from __future__ import annotations

import math
import random

from services.edge_agent.fleet.classes import DeviceClass, known_class
from services.edge_agent.fleet.config import DEFAULT_MIX
from services.edge_agent.fleet.errors import FleetConfigError


def parse_mix(text: str, classes: dict[str, DeviceClass]) -> dict[str, float]:
    """Parse `class=weight,...` into positive weights by class, in the order given.

    Raises:
        FleetConfigError: empty text, a part without `=`, an unknown class, a repeated class, or a
            weight that is not a positive finite number.
    """
    weights: dict[str, float] = {}
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise FleetConfigError(f"the mix is empty; give class=weight pairs, e.g. {DEFAULT_MIX}")
    for part in parts:
        name, sep, raw = part.partition("=")
        name, raw = name.strip(), raw.strip()
        if not sep or not name or not raw:
            raise FleetConfigError(f"mix entry {part!r} is not class=weight (e.g. rpi5=60)")
        known_class(name, classes)
        if name in weights:
            raise FleetConfigError(f"class {name!r} appears twice in the mix {text!r}")
        try:
            weight = float(raw.removesuffix("%"))
        except ValueError:
            raise FleetConfigError(f"weight {raw!r} of class {name!r} is not a number") from None
        if not math.isfinite(weight) or weight <= 0:
            raise FleetConfigError(f"weight of class {name!r} must be a positive number, got {raw!r}")
        weights[name] = weight
    return weights


def allocate(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Split `total` in proportion to `weights`, by largest remainder (the parts sum to `total`)."""
    if total < 0:
        raise FleetConfigError(f"cannot split a negative number of devices ({total})")
    whole = sum(weights.values())
    exact = {name: total * w / whole for name, w in weights.items()}
    counts = {name: math.floor(x) for name, x in exact.items()}
    # Ties go to the class listed first, so the split is the same on every run.
    order = sorted(weights, key=lambda n: (-(exact[n] - counts[n]), list(weights).index(n)))
    for name in order[: total - sum(counts.values())]:
        counts[name] += 1
    return counts


def assign_classes(total: int, weights: dict[str, float]) -> list[str]:
    """The class of each device index: counts from `allocate`, spread evenly over the indices."""
    counts = allocate(total, weights)
    slots = [((j + 0.5) / count, rank, name) for rank, (name, count) in enumerate(counts.items()) for j in range(count)]
    return [name for _, _, name in sorted(slots)]


def stratified_sample(device_classes: list[str], size: int, *, rng: random.Random | None = None) -> list[int]:
    """`size` device indices spread over the classes in proportion (every class gets one if it can).

    Used to choose which devices run real inference, so each class is measured on real sessions
    (the first devices of each class), and whose inputs shift (`rng`: chosen at random within each
    class, so the two sets are not the same devices).
    """
    size = max(0, min(size, len(device_classes)))
    by_class: dict[str, list[int]] = {}
    for index, name in enumerate(device_classes):
        by_class.setdefault(name, []).append(index)
    if size == 0 or not by_class:
        return []
    counts = allocate(size, {name: float(len(ix)) for name, ix in by_class.items()})
    if size >= len(by_class):
        # Rounding can leave a small class at zero; take one from the largest share instead.
        for name in by_class:
            if counts[name] == 0:
                donor = max(counts, key=lambda n: counts[n])
                counts[donor] -= 1
                counts[name] = 1
    chosen = [i for name, ix in by_class.items() for i in (rng.sample(ix, counts[name]) if rng else ix[: counts[name]])]
    return sorted(chosen)
