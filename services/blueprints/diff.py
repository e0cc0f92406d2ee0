"""What applying blueprints would change, per group of devices, before anything happens (`slmops diff -f`).

A pure function of what is stored, what would be stored, the inventory, what each device runs and
where the aliases point, so the diff a user reads is the one the controller would act on. Devices
are grouped by (blueprint, override, device class, what they run, what they would run, why), the
shape a renderer prints as one line per group; the data stays renderer-free.

What a device should run (`Target`): the override's pin, else the version the tracked alias points
at; the variant built with the class's profile (None: the best registered one it can run, as the
rollout planner resolves it); and the override's settings, by digest. The reason, the first that
holds:

    unchanged                  it runs the target already, with the same settings
    alias not set              the tracked alias points nowhere: nothing to roll out, it keeps what it runs
    new blueprint              its owner is not among the stored blueprints
    newly selected             its owner is stored but did not own it (its selector changed, or a tie is resolved)
    owner changed (was B)      another blueprint owned it (priorities or selectors changed)
    pinned by override O       the override pins a version it does not run
    track changed (was M@A)    its blueprint follows another model or alias than the stored one
    not installed              it runs nothing known (enrolled since, or no status yet)
    runs another model (M)     it serves another model than its blueprint's
    track moved                the tracked alias points at a version it does not run
    profile changed            right version, but not the variant of its class's profile
    settings changed           only the override's settings differ
    released (was B)           no blueprint owns it any more: it keeps what it runs
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from services.blueprints.ownership import Owner, require_no_ties, resolve_owners
from shared.messages.blueprint import Blueprint
from shared.messages.common import config_digest
from shared.messages.inventory import DeviceRecord
from shared.messages.rollout import BASE_VARIANT

UNCHANGED = "unchanged"


@dataclass(frozen=True, kw_only=True)
class Running:
    """What a device serves now, as the registry describes its active digest.

    Args:
        model: the model's name.
        version: its version.
        variant: the variant's name, or `base`.
        profile: the optimization profile the variant was built with; None for the base model or a
            variant built elsewhere.
    """

    model: str
    version: str
    variant: str = BASE_VARIANT
    profile: str | None = None


@dataclass(frozen=True, kw_only=True)
class Target:
    """What a device's blueprint says it should run.

    Args:
        model: the blueprint's model.
        version: the pin, else the tracked alias's version; None when the alias is not set.
        profile: the class's profile the variant is built with; None = the best variant it can run.
        settings: sha256 of the override's `config` as canonical JSON; None = no settings.
    """

    model: str
    version: str | None
    profile: str | None
    settings: str | None


@dataclass(frozen=True, kw_only=True)
class DiffGroup:
    """Devices that change (or not) the same way for the same reason.

    Args:
        blueprint: the owner after applying; for a released group, None.
        override: the override that applies to them, if any.
        device_class: their class.
        before: what they run now; None = nothing (or nothing known).
        after: what they would run; None for released devices (they keep what they run).
        reason: why (the module docstring's list).
        devices: their ids, sorted.
    """

    blueprint: str | None
    override: str | None
    device_class: str
    before: Running | None
    after: Target | None
    reason: str
    devices: tuple[str, ...]

    @property
    def changes(self) -> bool:
        return self.reason != UNCHANGED


# (blueprint, override, device class, before, after, reason): what makes devices one group.
_GroupKey = tuple[str | None, str | None, str, Running | None, Target | None, str]


def diff(
    before: Sequence[Blueprint],
    after: Sequence[Blueprint],
    devices: Iterable[DeviceRecord],
    *,
    running: Mapping[str, Running],
    aliases: Mapping[str, Mapping[str, str]],
) -> list[DiffGroup]:
    """Every device group's change from `before` to `after` (module docstring: targets and reasons).

    Args:
        before: the blueprints stored now.
        after: the blueprints that would be stored (all of them, not only those in a file).
        devices: the inventory; the same labels decide both sides, so only blueprints differ.
        running: device id -> what it serves now; a device missing here runs nothing known.
        aliases: model -> alias -> version, as the registry resolves them now.

    Returns:
        Groups sorted by blueprint, override, class and reason; devices no blueprint owns on either
        side are left out.

    Raises:
        PriorityTie: `after` ties on some device (apply would refuse it). A tie in `before` (devices
            relabelled since it was stored) counts as no owner there.
    """
    inventory = list(devices)
    old = resolve_owners(before, inventory).owners
    new = require_no_ties(resolve_owners(after, inventory)).owners
    stored = {b.name for b in before}
    groups: dict[_GroupKey, list[str]] = defaultdict(list)
    for device in inventory:
        was, now = old.get(device.device_id), new.get(device.device_id)
        current = running.get(device.device_id)
        if now is None:
            if was is None:
                continue  # no blueprint's business, before or after
            key: _GroupKey = (None, None, device.device_class, current, None, f"released (was {was.blueprint.name})")
        else:
            target = _target(now, device, aliases)
            reason = _reason(was, now, target, current, device=device, aliases=aliases, stored=stored)
            override = now.override.name if now.override else None
            key = (now.blueprint.name, override, device.device_class, current, target, reason)
        groups[key].append(device.device_id)
    return sorted(
        (
            DiffGroup(
                blueprint=blueprint,
                override=override,
                device_class=device_class,
                before=current,
                after=target,
                reason=reason,
                devices=tuple(sorted(ids)),
            )
            for (blueprint, override, device_class, current, target, reason), ids in groups.items()
        ),
        key=_order,
    )


def _target(owner: Owner, device: DeviceRecord, aliases: Mapping[str, Mapping[str, str]]) -> Target:
    spec, override = owner.blueprint.spec, owner.override
    pin = override.pin if override else None
    config = override.config if override else None
    return Target(
        model=spec.model,
        version=pin or aliases.get(spec.model, {}).get(spec.track),
        profile=spec.profiles.get(device.device_class),
        settings=config_digest(config) if config is not None else None,
    )


def _reason(
    was: Owner | None,
    now: Owner,
    target: Target,
    current: Running | None,
    *,
    device: DeviceRecord,
    aliases: Mapping[str, Mapping[str, str]],
    stored: set[str],
) -> str:
    spec = now.blueprint.spec
    if target.version is None:
        return "alias not set"
    old_settings = _target(was, device, aliases).settings if was is not None else None
    runs_version = current is not None and (current.model, current.version) == (target.model, target.version)
    runs_variant = runs_version and (
        target.profile is None or (current is not None and current.profile == target.profile)
    )
    if runs_variant and old_settings == target.settings:
        return UNCHANGED
    if was is None:
        return "new blueprint" if now.blueprint.name not in stored else "newly selected"
    if was.blueprint.name != now.blueprint.name:
        return f"owner changed (was {was.blueprint.name})"
    if now.override is not None and now.override.pin is not None and not runs_version:
        return f"pinned by override {now.override.name}"
    old_spec = was.blueprint.spec
    if (old_spec.model, old_spec.track) != (spec.model, spec.track):
        return f"track changed (was {old_spec.model}@{old_spec.track})"
    if current is None:
        return "not installed"
    if current.model != target.model:
        return f"runs another model ({current.model})"
    if not runs_version:
        return "track moved"
    if not runs_variant:
        return "profile changed"
    return "settings changed"


def _order(group: DiffGroup) -> tuple[str, str, str, str, tuple[str, ...]]:
    return (group.blueprint or "", group.override or "", group.device_class, group.reason, group.devices)
