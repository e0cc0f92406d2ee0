"""`slmops rollout start|list|show|pause|resume|abort|rollback`: staged rollouts from the command line.

Each verb is a command event on the bus (`rollout.start`, `rollout.pause`, ...), the same one other
systems publish, and waits for the rollout service's verdict. `start --dry-run` plans locally from
the inventory (KV devices) and the registry, with the service's own planning module, and changes
nothing; `list` and `show` read KV rollouts.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from shared.cli.common import CLI_SOURCE, JsonOption, console, fail, operator_connection, parse_labels, print_json, run

if TYPE_CHECKING:
    from shared.messages.common import CommandOutcome
    from shared.messages.envelope import Message
    from shared.messages.rollout import StartRollout
    from shared.messages.rollout_record import RolloutRecord

rollout_app = typer.Typer(help="Staged, gated rollouts that revert themselves.")
TERMINAL = ("completed", "rolled_back", "aborted")


@rollout_app.command("start")
def start(
    model: str = typer.Argument(..., help="The model's name."),
    ref: str = typer.Argument(..., help="A version or an alias, resolved once at start."),
    label: list[str] = typer.Option([], "--label", "-l", help="Select devices with label key=value (repeatable)."),
    device_class: list[str] = typer.Option([], "--class", help="Select devices of this class (repeatable)."),
    device: list[str] = typer.Option([], "--device", help="Select this device id (repeatable)."),
    arch: list[str] = typer.Option([], "--arch", help="Select devices of this architecture (repeatable)."),
    min_ram: int | None = typer.Option(None, "--min-ram", help="Select devices with at least this much RAM (MiB)."),
    accelerator: list[str] = typer.Option([], "--accelerator", help="Select devices that have it (repeatable)."),
    waves: str = typer.Option("1,10,50,100", help="Cumulative percentages of the selected devices."),
    soak: str = typer.Option("300s", help="Telemetry collected after each wave installs, before its gates."),
    gate: list[str] = typer.Option([], "--gate", "-g", help="e.g. 'error_rate<=0.05', 'latency_p95_ms<=+10%'."),
    max_download_rate: float | None = typer.Option(None, help="Desired-state writes per second (downloads)."),
    shadow: bool = typer.Option(False, help="Devices also run the previous model and report agreement."),
    config_file: Path | None = typer.Option(
        None,
        "--config",
        help="A JSON object: application settings delivered with the model to every device (default: none).",
    ),
    rollout_id: str | None = typer.Option(None, "--id", help="The rollout's id (default: from the command)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; change nothing."),
    watch: bool = typer.Option(False, "--watch", help="Follow the rollout until it ends."),
    wait: float = typer.Option(30.0, help="Seconds to wait for the service's verdict."),
    as_json: bool = JsonOption,
) -> None:
    """Roll MODEL REF out to the selected devices in gated waves (every class gets a canary)."""
    from pydantic import ValidationError

    from shared.messages.rollout import Selector, StartRollout
    from shared.notation import OptionError, parse_duration, parse_gate, parse_waves

    try:
        cmd = StartRollout(
            rollout_id=rollout_id,
            model=model,
            ref=ref,
            selector=Selector(
                labels=parse_labels(label, option="--label"),
                device_classes=device_class,
                device_ids=device,
                arch=arch,
                min_ram_mb=min_ram,
                accelerators=accelerator,
            ),
            waves=parse_waves(waves),
            gates=[parse_gate(g) for g in gate],
            soak_seconds=parse_duration(soak),
            max_download_starts_per_second=max_download_rate,
            shadow=shadow,
            config=_settings(config_file) if config_file is not None else None,
        )
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()))
    except OptionError as exc:
        fail(str(exc))
    if dry_run:
        run(_dry_run(cmd, as_json=as_json))
        return
    outcome = run(_send(cmd, wait))
    _report(outcome, as_json=as_json)
    if watch and outcome.status != "rejected":
        run(_watch(str(outcome.result["rollout_id"])))


def _settings(path: Path) -> dict[str, Any]:
    """The `--config` file's JSON object (the contract checks its size and values)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"--config {path}: {exc.strerror or exc}")
    except (ValueError, RecursionError) as exc:
        fail(f"--config {path}: not JSON: {str(exc) or type(exc).__name__}")
    if not isinstance(value, dict):
        fail(f"--config {path}: the settings must be a JSON object, got {type(value).__name__}")
    return value


@rollout_app.command("list")
def list_rollouts(as_json: bool = JsonOption) -> None:
    """Every rollout, oldest first."""
    from services.rollout.render import rollouts_table

    records = run(_records())
    if as_json:
        print_json([r.model_dump(mode="json") for r in records])
    else:
        console.print(rollouts_table(records))


@rollout_app.command("show")
def show(rollout_id: str = typer.Argument(...), as_json: bool = JsonOption) -> None:
    """One rollout: its waves, classes, verdicts and gate numbers."""
    from services.rollout.render import rollout_table

    record, states = run(_record_and_states(rollout_id))
    if as_json:
        print_json({**record.model_dump(mode="json"), "device_states": {str(k): v for k, v in states.items()}})
    else:
        console.print(rollout_table(record, states))


@rollout_app.command("history")
def history(rollout_id: str = typer.Argument(...), as_json: bool = JsonOption) -> None:
    """The rollout's audit trail: every event it left on the events stream, in order."""
    from services.rollout.render import history_table

    events = run(_history(rollout_id))
    if not events:
        fail(f"no events of rollout {rollout_id!r} on the events stream")
    if as_json:
        print_json(events)
    else:
        console.print(history_table(rollout_id, events))


def _steer(verb: str) -> Any:
    def command(
        rollout_id: str = typer.Argument(...),
        reason: str | None = typer.Option(None, help="Why, for the audit trail."),
        wait: float = typer.Option(30.0, help="Seconds to wait for the service's verdict."),
        as_json: bool = JsonOption,
    ) -> None:
        from shared.messages import rollout as messages

        kind = {
            "pause": messages.PauseRollout,
            "resume": messages.ResumeRollout,
            "abort": messages.AbortRollout,
            "rollback": messages.RollbackRollout,
        }[verb]
        _report(run(_send(kind(rollout_id=rollout_id, reason=reason), wait)), as_json=as_json)

    command.__doc__ = {
        "pause": "Stop advancing; devices keep what they run.",
        "resume": "Continue a paused rollout.",
        "abort": "End the rollout without reverting anything.",
        "rollback": "Put every device the rollout touched back on exactly what it had.",
    }[verb]
    return command


for _verb in ("pause", "resume", "abort", "rollback"):
    rollout_app.command(_verb)(_steer(_verb))


def _report(outcome: CommandOutcome, *, as_json: bool) -> None:
    if as_json:
        print_json(outcome.model_dump(mode="json"))
    if outcome.status == "rejected":
        fail(f"refused: {outcome.reason}")
    if not as_json:
        console.print(f"[green]{outcome.status}[/] {outcome.result}")


async def _send(cmd: Message, wait: float) -> CommandOutcome:
    from shared import bus

    async with operator_connection() as nc:
        command_id, outcome = await bus.send_command(nc, cmd, source=CLI_SOURCE, wait=wait)
    if outcome is None:
        fail(f"the command {command_id} is queued, but the rollout service gave no verdict within {wait:.0f} s")
    return outcome


async def _dry_run(cmd: StartRollout, *, as_json: bool) -> None:
    from services.rollout import planning
    from services.rollout.adapters.jetstream import KvDeviceStore
    from services.rollout.render import plan_tables
    from shared.clients import RegistryClient

    async with operator_connection() as nc:
        detail = await RegistryClient(nc, source=CLI_SOURCE).get_model(cmd.model, cmd.ref)
        devices = KvDeviceStore(nc.jetstream())
        try:
            fleet = await devices.all()
        finally:
            await devices.close()
    try:
        plan = planning.plan_start(cmd, detail, fleet, rollout_id=cmd.rollout_id or "dry-run")
    except planning.UnknownVariant as exc:
        fail(str(exc))
    if as_json:
        by_id = {t.device_id: t for t in plan.targets}
        print_json(
            {
                "model": cmd.model,
                "version": detail.version.version,
                "waves": [
                    {
                        **w.contract().model_dump(mode="json"),
                        "devices": [
                            {"device_id": d, "device_class": by_id[d].device_class, "variant": by_id[d].variant}
                            for d in w.device_ids
                        ],
                    }
                    for w in plan.waves
                ],
                "excluded": [
                    {"device_id": e.device_id, "device_class": e.device_class, "reason": e.reason}
                    for e in plan.excluded
                ],
            }
        )
        return
    for table in plan_tables(plan, model=cmd.model, version=detail.version.version):
        console.print(table)


async def _history(rollout_id: str) -> list[dict[str, Any]]:
    """Every event envelope naming the rollout, read once through the events stream."""
    import json

    from nats.js.api import ConsumerConfig, DeliverPolicy

    from shared import subjects, topology

    async with operator_connection() as nc:
        js = nc.jetstream()
        info = await js.stream_info(topology.EVENTS_STREAM)
        if not info.state.messages:
            return []
        sub = await js.subscribe(
            f"{subjects.EVT}.>", ordered_consumer=True, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        )
        found = []
        try:
            while True:
                msg = await sub.next_msg(timeout=5)
                body = json.loads(msg.data)
                if isinstance(body, dict) and body.get("data", {}).get("rollout_id") == rollout_id:
                    found.append(body)
                if msg.metadata.num_pending == 0:
                    return found
        finally:
            await sub.unsubscribe()


async def _records() -> list[RolloutRecord]:
    from services.rollout.adapters.jetstream import KvRolloutStore

    async with operator_connection() as nc:
        return list(await KvRolloutStore(nc.jetstream()).list())


async def _record_and_states(rollout_id: str) -> tuple[RolloutRecord, dict[int, dict[str, int]]]:
    """The record, and its devices by state per wave (from `desired`, `devices` and the saved states)."""
    from services.rollout.adapters.jetstream import KvDesiredStore, KvDeviceStore, KvRolloutStore
    from services.rollout.decide import DeviceView, device_states

    async with operator_connection() as nc:
        js = nc.jetstream()
        rollouts, desired, devices = KvRolloutStore(js), KvDesiredStore(js), KvDeviceStore(js)
        try:
            found = await rollouts.get(rollout_id)
            if found is None:
                fail(f"no rollout {rollout_id!r}; `slmops rollout list` shows them")
            record = found[0]
            ids = [d for w in record.waves[: record.wave + 1] for d in w.devices]
            wanted, statuses = await desired.get_many(ids), await devices.get_many(ids)
            previous = await rollouts.previous(rollout_id, ids)
        finally:
            for store in (rollouts, desired, devices):
                await store.close()
    views = {
        d: DeviceView(
            desired=wanted[d][0] if d in wanted else None,
            revision=wanted[d][1] if d in wanted else None,
            previous_saved=d in previous,
            status=statuses[d].last_status if d in statuses else None,
        )
        for d in ids
    }
    return record, device_states(record, views)


async def _watch(rollout_id: str) -> None:
    from rich.live import Live

    from services.rollout.adapters.jetstream import KvRolloutStore
    from services.rollout.render import rollout_table

    async with operator_connection() as nc:
        store = KvRolloutStore(nc.jetstream())
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                found = await store.get(rollout_id)
                if found is not None:
                    live.update(rollout_table(found[0]))
                    if found[0].state in TERMINAL or found[0].state == "paused":
                        return  # over, or waiting for an operator (slmops rollout resume / rollback)
                await asyncio.sleep(0.5)
