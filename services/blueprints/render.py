"""What `slmops apply|diff` and `slmops blueprint list|show` print, built from the service's replies alone.

Pure functions of the reply models (`shared.messages.blueprint_api`), kept apart from the commands so
each rendering is tested without a bus (tests/unit/blueprints/test_render.py). Every value that
comes from a file or a service (names, reasons, summaries) goes into a `Text`, never into markup, so
a `[` in a reason is printed rather than read as a style.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import yaml
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from services.blueprints.diff import UNCHANGED
from shared.messages.blueprint_api import (
    AppliedBlueprint,
    ApplyResult,
    BlueprintDetail,
    BlueprintStatus,
    BlueprintSummary,
    DeviceGroupChange,
    RunningArtifact,
    StoredBlueprint,
    TargetArtifact,
)

SHORT_DIGEST = 12  # hex characters of a settings or document digest shown in a table
LOST_SHOWN_PER_OWNER = 5


# --- apply and diff ----------------------------------------------------------------------------


def applied_line(applied: AppliedBlueprint, *, dry_run: bool) -> str:
    """`blueprint/NAME created (generation 1)`, as `kubectl apply` prints it; `(dry run)` when nothing was stored."""
    line = f"blueprint/{applied.name} {applied.action}"
    if applied.action in ("created", "configured"):
        line += f" (generation {applied.generation})"
    return line + (" (dry run)" if dry_run else "")


def running_cell(before: RunningArtifact | None) -> str:
    """What a group runs now: `MODEL VERSION VARIANT`, with the profile its variant was built with."""
    if before is None:
        return "nothing"
    cell = f"{before.model} {before.version} {before.variant}"
    return cell + (f", profile {before.profile}" if before.profile else "")


def target_cell(after: TargetArtifact | None, before: RunningArtifact | None = None) -> str:
    """What a group would run: version, the profile of its variant (or the best one it can run) and
    the settings' digest. The model is named only when it replaces another one the group runs now."""
    if after is None:
        return "keeps what it runs"
    parts = []
    if before is not None and before.model != after.model:
        parts.append(after.model)
    parts.append(after.version or "no version")
    cell = " ".join(parts)
    cell += f", profile {after.profile}" if after.profile else ", best variant"
    if after.settings:
        cell += f", settings {after.settings[:SHORT_DIGEST]}"
    return cell


def changed_groups(groups: Iterable[DeviceGroupChange]) -> list[DeviceGroupChange]:
    return [g for g in groups if g.reason != UNCHANGED]


def groups_table(
    groups: Sequence[DeviceGroupChange],
    *,
    title: str,
    with_blueprint: bool = True,
    headings: tuple[str, str] = ("from", "to"),
) -> Table:
    """One row per device group: who owns it, its class and size, what it runs, what it would run, why.

    Args:
        groups: the groups, in the service's order (by blueprint, override, class, reason).
        title: the table's title.
        with_blueprint: a blueprint column (left out by `blueprint show`, where it is always the same).
        headings: the before and after columns' names (`runs`, `should run` for `blueprint show`).
    """
    # Columns that would say the same on every row, or nothing, are left out: a table that fits an
    # 80-column terminal is read, one that wraps every cell is not.
    with_blueprint = with_blueprint and len({g.blueprint for g in groups}) > 1
    with_override = any(g.override for g in groups)
    table = Table(title=title, title_justify="left")
    columns = [
        *(["blueprint"] if with_blueprint else []),
        *(["override"] if with_override else []),
        "class",
        "devices",
        *headings,
        "why",
    ]
    for column in columns:
        table.add_column(column, justify="right" if column == "devices" else "left")
    for g in groups:
        cells = [
            *([g.blueprint or "(none)"] if with_blueprint else []),
            *([g.override or ""] if with_override else []),
            g.device_class,
            str(g.count),
            running_cell(g.before),
            target_cell(g.after, g.before),
            g.reason,
        ]
        table.add_row(*(Text(c) for c in cells))
    return table


def unchanged_line(groups: Iterable[DeviceGroupChange]) -> str | None:
    """`38 devices in 3 groups unchanged (demo-fleet 36, edge 2)`; None when no group is unchanged."""
    same = [g for g in groups if g.reason == UNCHANGED]
    if not same:
        return None
    per_blueprint: Counter[str] = Counter()
    for g in same:
        per_blueprint[g.blueprint or "(none)"] += g.count
    devices = sum(per_blueprint.values())
    where = ", ".join(f"{name} {n}" for name, n in sorted(per_blueprint.items()))
    return f"{_count(devices, 'device')} in {_count(len(same), 'group')} unchanged ({where})"


def would_change(result: ApplyResult) -> bool:
    """Whether applying changes anything: a stored document, or what a device should run. Groups the
    service left out (`groups_omitted`) are counted as changes, since the reply does not say."""
    return (
        any(b.action != "unchanged" for b in result.blueprints)
        or bool(changed_groups(result.groups))
        or result.groups_omitted > 0
    )


def apply_view(result: ApplyResult) -> list[RenderableType]:
    """`slmops apply` and `slmops diff`: each blueprint's action, then the device groups that change,
    then one line for those that do not."""
    out: list[RenderableType] = [Text(applied_line(b, dry_run=result.dry_run)) for b in result.blueprints]
    changing = changed_groups(result.groups)
    verb = "would change" if result.dry_run else "will change"
    if changing:
        devices = sum(g.count for g in changing)
        out.append(groups_table(changing, title=f"{_count(devices, 'device')} {verb}"))
    else:
        out.append(Text(f"no device {verb}" if not result.groups_omitted else f"no listed device {verb}"))
    if result.groups_omitted:
        out.append(Text(f"{_count(result.groups_omitted, 'more group')} not listed (--json has the listed ones)"))
    line = unchanged_line(result.groups)
    if line:
        out.append(Text(line))
    return out


# --- list and show -----------------------------------------------------------------------------


def blueprints_table(summaries: Sequence[BlueprintSummary]) -> Table:
    """Every stored blueprint, highest priority first (the order in which they win devices)."""
    table = Table(title="blueprints", title_justify="left")
    for column in ("name", "model@track", "priority", "generation", "devices", "lost", "summary"):
        table.add_column(column, justify="right" if column in ("priority", "generation", "devices", "lost") else "left")
    for s in sorted(summaries, key=lambda s: (-s.priority, s.name)):
        cells = (s.name, f"{s.model}@{s.track}", str(s.priority), str(s.generation), str(s.devices), str(s.lost))
        table.add_row(*(Text(c) for c in (*cells, s.summary)))
    return table


def document_yaml(stored: StoredBlueprint) -> str:
    """The stored document as YAML a file could hold, as the user wrote it less what is a default
    (the resource fills defaults in again, so applying it changes nothing)."""
    document = stored.blueprint.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    shown: str = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return shown


def lost_lines(detail: BlueprintDetail) -> list[str]:
    """The devices it selects that higher-priority blueprints own: per owner, the first ones, then
    how many of all its lost devices the reply did not list."""
    if not detail.lost_count:
        return ["lost no device to another blueprint"]
    by_owner: dict[str, list[str]] = defaultdict(list)
    for device, owner in sorted(detail.lost.items()):
        by_owner[owner].append(device)
    lines = [f"lost {_count(detail.lost_count, 'device')} to higher-priority blueprints:"]
    for owner, devices in sorted(by_owner.items()):
        shown = ", ".join(devices[:LOST_SHOWN_PER_OWNER])
        if len(devices) > LOST_SHOWN_PER_OWNER:
            shown += f" and {len(devices) - LOST_SHOWN_PER_OWNER} more"
        lines.append(f"  to {owner}: {shown}")
    unlisted = detail.lost_count - len(detail.lost)
    if unlisted > 0:
        lines.append(f"  and {_count(unlisted, 'device')} not listed")
    return lines


def status_view(status: BlueprintStatus | None, *, generation: int) -> list[RenderableType]:
    """What the controller did about the blueprint: its last outcome, the optimizations it requested,
    the rollouts it started (with the state it last saw), the versions it promoted."""
    if status is None:
        return [Text("status: not reconciled yet")]
    head = f"status (generation {status.generation}, {status.updated_at.isoformat()}): {status.summary or '-'}"
    out: list[RenderableType] = [Text(head)]
    if status.generation < generation:
        out.append(Text(f"  the controller has not reconciled generation {generation} yet"))
    if status.optimizations:
        table = Table(title="optimizations requested", title_justify="left")
        for column in ("version", "profile", "state", "at", "reason"):
            table.add_column(column)
        for o in status.optimizations:
            table.add_row(*(Text(c) for c in (o.version, o.profile, o.state, o.at.isoformat(), o.reason or "")))
        out.append(table)
    if status.rollouts:
        table = Table(title="rollouts started", title_justify="left")
        for column in ("rollout", "version", "group", "generation", "devices", "state", "started", "reason"):
            table.add_column(column, justify="right" if column in ("generation", "devices") else "left")
        for r in status.rollouts:
            row = (r.rollout_id, r.version, r.group, str(r.generation), str(r.devices), r.state)
            table.add_row(*(Text(c) for c in (*row, r.started_at.isoformat(), r.reason or "")))
        out.append(table)
    out.append(Text(f"promoted: {', '.join(status.promoted)}" if status.promoted else "promoted: nothing yet"))
    return out


def blueprint_view(detail: BlueprintDetail) -> list[RenderableType]:
    """`slmops blueprint show`: the document, its generation, the devices it owns and lost, its groups
    (what they run, what they should run, why) and the controller's status."""
    stored = detail.stored
    head = (
        f"blueprint/{stored.blueprint.name}: generation {stored.generation}, applied {stored.applied_at.isoformat()}, "
        f"digest {stored.digest[:SHORT_DIGEST]}"
    )
    out: list[RenderableType] = [Text(head), Text(document_yaml(stored).rstrip())]
    out.append(Text(f"owns {_count(detail.devices, 'device')}"))
    out += [Text(line) for line in lost_lines(detail)]
    if detail.groups:
        out.append(
            groups_table(detail.groups, title="its devices", with_blueprint=False, headings=("runs", "should run"))
        )
    out += status_view(detail.status, generation=stored.generation)
    return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
