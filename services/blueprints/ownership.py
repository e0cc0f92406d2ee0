"""Which blueprint owns each device, and which of its overrides applies there.

Rules (pure functions of the blueprints and the inventory, so `diff`, `show` and the controller
agree):

- **Selection** is the rollout's own (`shared.selection.selects`): a blueprint selects
  exactly the devices `slmops rollout start` with the same selector would.
- **Priority**: of the blueprints selecting a device, the one with the highest `spec.priority`
  owns it; the others *lose* it, and `Ownership.lost` says to whom, for `blueprint show`.
- **Ties are refused**, never broken by name or age: when two or more blueprints share the highest
  priority on a device, nobody owns it and the tie is reported (`Ownership.ties`);
  `require_no_ties` turns them into one `PriorityTie` naming the blueprints and the devices.
  A tie below the winner's priority is no tie: the winner decides.
- **Overrides: the first match wins**, in declaration order. Refusing overlaps instead would make
  a blueprint valid or not depending on the labels devices happen to carry (a device relabelled
  later could break a stored blueprint); first match is decided by the file alone, like firewall
  rules. The resource refuses an override that an earlier one shadows completely (its match a
  superset of the earlier's), so every declared override can apply to some device.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from services.blueprints.errors import DuplicateBlueprint, PriorityTie, Tie
from shared.messages.blueprint import Blueprint, Override
from shared.messages.inventory import DeviceRecord
from shared.selection import selects


@dataclass(frozen=True, kw_only=True)
class Owner:
    """The blueprint that owns a device, and the override that applies to it (None: the blueprint's own settings)."""

    blueprint: Blueprint
    override: Override | None


@dataclass(frozen=True, kw_only=True)
class Ownership:
    """The outcome for a set of blueprints over an inventory.

    Args:
        owners: device id -> its owner; a device no blueprint selects, or a tied one, is absent.
        lost: blueprint name -> {device id: the blueprint that owns it instead}.
        ties: devices nobody owns because blueprints of equal, highest priority select them.
        unmatched: names of blueprints that select no device at all.
    """

    owners: Mapping[str, Owner]
    lost: Mapping[str, Mapping[str, str]]
    ties: tuple[Tie, ...]
    unmatched: tuple[str, ...]

    def devices_of(self, name: str) -> list[str]:
        """The devices blueprint `name` owns, sorted."""
        return sorted(d for d, owner in self.owners.items() if owner.blueprint.name == name)


def resolve_owners(blueprints: Sequence[Blueprint], devices: Iterable[DeviceRecord]) -> Ownership:
    """Decide every device's owner (module docstring: the rules); ties are reported, not raised.

    Raises:
        DuplicateBlueprint: two blueprints with one name (a name is a blueprint's key).
    """
    _require_unique(blueprints)
    owners: dict[str, Owner] = {}
    lost: dict[str, dict[str, str]] = defaultdict(dict)
    tied: dict[tuple[tuple[str, ...], int], list[str]] = defaultdict(list)
    matched: set[str] = set()
    for device in devices:
        selecting = [b for b in blueprints if selects(b.spec.selector, device)]
        if not selecting:
            continue
        matched.update(b.name for b in selecting)
        top = max(b.spec.priority for b in selecting)
        winners = [b for b in selecting if b.spec.priority == top]
        if len(winners) > 1:
            tied[(tuple(sorted(b.name for b in winners)), top)].append(device.device_id)
            continue
        winner = winners[0]
        owners[device.device_id] = Owner(blueprint=winner, override=matching_override(winner, device))
        for loser in selecting:
            if loser is not winner:
                lost[loser.name][device.device_id] = winner.name
    ties = tuple(
        Tie(blueprints=names, priority=priority, devices=tuple(sorted(ids)))
        for (names, priority), ids in sorted(tied.items())
    )
    return Ownership(
        owners=owners,
        lost={name: dict(sorted(devs.items())) for name, devs in sorted(lost.items())},
        ties=ties,
        unmatched=tuple(sorted(b.name for b in blueprints if b.name not in matched)),
    )


def require_no_ties(ownership: Ownership) -> Ownership:
    """`ownership`, if no device is tied; what `apply` and `diff` call before going on.

    Raises:
        PriorityTie: naming each set of tied blueprints, their priority and devices.
    """
    if ownership.ties:
        raise PriorityTie(ownership.ties)
    return ownership


def matching_override(blueprint: Blueprint, device: DeviceRecord) -> Override | None:
    """The first of the blueprint's overrides whose every label matches the device's, or None."""
    for override in blueprint.spec.overrides:
        if all(device.labels.get(key) == value for key, value in override.match.items()):
            return override
    return None


def _require_unique(blueprints: Sequence[Blueprint]) -> None:
    seen: set[str] = set()
    for blueprint in blueprints:
        if blueprint.name in seen:
            raise DuplicateBlueprint(blueprint.name)
        seen.add(blueprint.name)
