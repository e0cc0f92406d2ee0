"""Tables for `slmops rollout ...` (rich), kept apart from the commands so they are tested alone."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from services.rollout.planning import Plan
from shared.messages.rollout_record import RolloutRecord

MAX_EXCLUDED_ROWS = 20


def plan_tables(plan: Plan, *, model: str, version: str) -> list[Table]:
    """What a start would do: devices per wave per class with the artifact each group gets, and the
    excluded devices with their reasons."""
    by_id = {t.device_id: t for t in plan.targets}
    waves = Table(title=f"plan: {model} {version}, {len(plan.targets)} devices, {len(plan.excluded)} excluded")
    for column in ("wave", "share", "class", "devices", "gets"):
        waves.add_column(column)
    for wave in plan.waves:
        groups = Counter((by_id[d].device_class, by_id[d].variant or "base") for d in wave.device_ids)
        if not groups:
            waves.add_row(str(wave.index), f"{wave.percent:g} %", "", "0", "")
        for i, ((cls, artifact), n) in enumerate(sorted(groups.items())):
            waves.add_row(
                str(wave.index) if i == 0 else "", f"{wave.percent:g} %" if i == 0 else "", cls, str(n), artifact
            )
    tables = [waves]
    if plan.excluded:
        excluded = Table(title="excluded")
        excluded.add_column("device")
        excluded.add_column("class")
        excluded.add_column("why")
        for e in plan.excluded[:MAX_EXCLUDED_ROWS]:
            excluded.add_row(e.device_id, e.device_class, e.reason)
        if len(plan.excluded) > MAX_EXCLUDED_ROWS:
            excluded.add_row(f"... {len(plan.excluded) - MAX_EXCLUDED_ROWS} more", "", "")
        tables.append(excluded)
    return tables


def rollouts_table(records: Sequence[RolloutRecord]) -> Table:
    table = Table(title="rollouts")
    for column in ("rollout", "model", "version", "state", "wave", "devices", "updated"):
        table.add_column(column)
    for r in sorted(records, key=lambda r: r.created_at):
        devices = sum(len(w.devices) for w in r.waves)
        table.add_row(
            r.rollout_id,
            r.model,
            r.version,
            r.state,
            f"{r.wave + 1}/{len(r.waves)}",
            str(devices),
            r.updated_at.isoformat(),
        )
    return table


def rollout_table(record: RolloutRecord, states: Mapping[int, Mapping[str, int]] | None = None) -> Table:
    """One rollout: its waves with their classes, devices by state, verdicts and every gate's numbers."""
    title = f"{record.rollout_id}: {record.model} {record.version}, {record.state}"
    if record.reason:
        title += f" ({record.reason})"
    table = Table(title=title)
    columns = ["wave", "share", "devices", "classes", "started", "installed", "verdict", "gates"]
    if states is not None:
        columns.insert(4, "by state")
    for column in columns:
        table.add_column(column)
    for w in record.waves:
        classes = ", ".join(f"{c} {n}" for c, n in sorted(w.by_class.items()))
        gates = "; ".join(
            f"{g.device_class or 'wave'}: {g.verdict} ({g.observed if g.observed is not None else '-'}, n={g.samples})"
            for g in w.gates
        )
        by_state = [", ".join(f"{n} {k}" for k, n in sorted((states or {}).get(w.index, {}).items()))]
        table.add_row(
            str(w.index),
            f"{w.percent:g} %",
            str(len(w.devices)),
            classes,
            *(by_state if states is not None else []),
            w.started_at.strftime("%H:%M:%S") if w.started_at else "",
            w.installed_at.strftime("%H:%M:%S") if w.installed_at else "",
            w.verdict or "",
            gates,
        )
    return table


def history_table(rollout_id: str, events: Sequence[Mapping[str, Any]]) -> Table:
    """The audit trail: one row per event, with what changed."""
    table = Table(title=f"history of {rollout_id}")
    for column in ("time", "event", "what"):
        table.add_column(column)
    for e in events:
        table.add_row(str(e.get("time", ""))[:23], str(e.get("type", "")), _what(e.get("data", {})))
    return table


def _what(data: Mapping[str, Any]) -> str:
    if "to_state" in data:
        return f"{data['from_state']} -> {data['to_state']}" + (f": {data['reason']}" if data.get("reason") else "")
    if "verdict" in data and "metric" in data:
        where = data.get("device_class") or "wave"
        return f"wave {data['wave']} {where} {data['metric']}: {data['verdict']} (observed {data.get('observed')})"
    if "verdict" in data:
        return f"wave {data['wave']}: {data['verdict']}, {data.get('installed')} of {data.get('devices')} installed"
    if "trigger" in data:
        return f"{data['devices']} devices reverted ({data['trigger']}): {data.get('reason', '')}"
    if "plan" in data:
        return f"{data.get('targets')} devices, version {data.get('version')}"
    if isinstance(data.get("wave"), dict):
        return f"wave {data['wave'].get('index')}: {data['wave'].get('devices')} devices"
    if "by_digest" in data:
        return f"{data.get('devices')} devices on {data.get('version')}"
    return ""
