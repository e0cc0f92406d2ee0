"""`make bench-rollout`: staged, gated rollouts to 10,000 simulated devices, and a revert.

Starts the embedded stack's processes in a temporary home (nats-server with authentication, the S3
server, and the registry, intake, telemetry and rollout services, each its own process, as `slmops
up` runs them), registers the tiny sample model in three versions, and starts the fleet simulator
(`slmops fleet simulate`, a process of its own, as a fleet is): `--devices` devices over three
classes (rpi5/jetson/gateway 60/30/10), which really download, verify and switch, and draw
telemetry windows every `--window-seconds` (a new model's first after 1 s) from a real measurement
of each artifact. Then three rollouts, each a plain `rollout.start` command:

1. setup: v1 to every device in one wave (so the measured rollout is an update, with a baseline);
2. measured: v2 in four waves (1/10/50/100 %), gates on (error rate <= 5 % absolute, and latency
   not more than twice the baseline's at 95 % confidence (Mann-Whitney), per class and for the wave),
   no soak;
3. revert: v3 in waves 10/100 with a gate no model passes (p50 latency <= 0.0001 ms): the first
   wave's 1,000 devices install, the gate fails, and the rollout puts every one of them back.

Every time comes from the server's stream timestamps, read back after each rollout: desired-state
writes from the `desired` bucket's stream, statuses from SLMOPS_DEVICE, telemetry windows from
SLMOPS_TELEMETRY, events from SLMOPS_EVENTS. A device is ready when it is active on the revision the
rollout wrote *and* its first window from that wave has arrived (what the rollout waits for); a
wave needs `ceil(install_threshold x size)` ready devices, so its "last needed" moment is the
needed-th ready time.

- `total_s`: the start command's publish to the `rollout.completed` event;
- `waves[i].install_s`: wave i's first desired write to its last needed ready moment;
- `wave_transition_p50_s`: the median over waves of the next wave's first desired write minus the
  wave's last needed ready moment (the status intake, the install threshold, the gate evaluations
  per class and the first write of the next wave, all inside);
- `revert_s`: the Failed `gate.verdict` event to the last touched device's `active` status on its
  old digest for the revert write; `revert_writes_s`: to the last revert write.

Prints a table and writes bench/results/rollout.json. Exits 1 when a rollout does not end as it
should (completed; rolled back with every touched device back), never on a missed target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nats.aio.client import Client  # noqa: E402
from nats.js.api import ConsumerConfig, DeliverPolicy  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from samples.tiny import write_sample  # noqa: E402
from services.edge_agent.fleet.resources import rss_mb  # noqa: E402
from shared import bus, subjects, topology  # noqa: E402
from shared.artifacts import ArtifactStore  # noqa: E402
from shared.clients import RegistryClient  # noqa: E402
from shared.messages.common import ObjectRef  # noqa: E402
from shared.messages.registry import ModelDetail, RegisterModel  # noqa: E402
from shared.messages.rollout import Gate, Selector, StartRollout, Wave  # noqa: E402
from shared.messages.rollout_record import RolloutRecord  # noqa: E402
from shared.notation import parse_gate  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.stack.servers import stop_process  # noqa: E402
from shared.stack.supervisor import Stack  # noqa: E402

MODEL = "bench-rollout"
SERVICES = ["registry", "intake", "telemetry", "rollout"]
MIX = {"rpi5": 0.6, "jetson": 0.3, "gateway": 0.1}
console = Console(width=150)


@dataclass
class WaveResult:
    index: int
    percent: float
    devices: int
    needed: int
    first_write_s: float  # from the start command
    writes_s: float  # first to last desired write of the wave
    install_s: float | None  # first write to the last needed ready moment
    transition_s: float | None  # last needed ready moment to the next wave's first write
    noticed_s: float | None  # last needed ready moment to the service's "installed" (its own clock)
    verdict: str | None


@dataclass
class RolloutResult:
    name: str
    rollout_id: str
    state: str
    devices: int
    total_s: float | None
    waves: list[WaveResult] = field(default_factory=list)
    reason: str | None = None


# --- reading streams back ------------------------------------------------------------------------


async def scan(nc: Client, stream: str, subject: str, *, after_seq: int = 0) -> list[tuple[int, datetime, str, bytes]]:
    """Every message of `stream` on `subject` after `after_seq`: (sequence, server time, subject, body)."""
    js = nc.jetstream()
    info = await js.stream_info(stream)
    last = int(info.state.last_seq)
    out: list[tuple[int, datetime, str, bytes]] = []
    if last <= after_seq:
        return out
    done = asyncio.Event()

    async def take(msg: Any) -> None:
        meta = msg.metadata
        out.append((int(meta.sequence.stream), meta.timestamp, msg.subject, msg.data))
        if meta.num_pending == 0 or int(meta.sequence.stream) >= last:
            done.set()

    sub = await js.subscribe(
        subject,
        stream=stream,
        cb=take,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_seq + 1),
    )
    try:
        await asyncio.wait_for(done.wait(), timeout=300)
    except TimeoutError:
        pass  # nothing matched after after_seq: the last message is on another subject
    finally:
        await sub.unsubscribe()
    return [m for m in out if m[0] <= last]


async def last_seq(nc: Client, stream: str) -> int:
    return int((await nc.jetstream().stream_info(stream)).state.last_seq)


@dataclass
class Marks:
    """Stream positions before a rollout: what is read back after it."""

    desired: int
    device: int
    telemetry: int
    events: int

    @classmethod
    async def now(cls, nc: Client) -> Marks:
        return cls(
            desired=await last_seq(nc, f"KV_{topology.KV_DESIRED}"),
            device=await last_seq(nc, topology.DEVICE_STREAM),
            telemetry=await last_seq(nc, topology.TELEMETRY_STREAM),
            events=await last_seq(nc, topology.EVENTS_STREAM),
        )


@dataclass
class Timeline:
    """One rollout's messages, as the server stamped them."""

    writes: dict[str, list[tuple[datetime, int, dict[str, Any] | None]]]  # device -> (time, revision, desired)
    statuses: list[dict[str, Any]]  # device.status data with "_at"
    first_window: dict[tuple[str, int], datetime]  # (device, wave) -> first window of this rollout
    events: list[dict[str, Any]]  # envelopes of this rollout's events with "_at"


async def timeline(nc: Client, marks: Marks, rollout_id: str) -> Timeline:
    writes: dict[str, list[tuple[datetime, int, dict[str, Any] | None]]] = {}
    prefix = f"$KV.{topology.KV_DESIRED}."
    for seq, at, subject, body in await scan(nc, f"KV_{topology.KV_DESIRED}", f"{prefix}>", after_seq=marks.desired):
        doc = json.loads(body) if body else None  # empty: a delete (a revert to no desired state)
        writes.setdefault(subject.removeprefix(prefix), []).append((at, seq, doc))
    statuses = []
    for _, at, _, body in await scan(nc, topology.DEVICE_STREAM, f"{subjects.DEVICE}.*.status", after_seq=marks.device):
        data = json.loads(body)["data"]
        data["_at"] = at
        statuses.append(data)
    first_window: dict[tuple[str, int], datetime] = {}
    needle = rollout_id.encode()
    for _, at, _, body in await scan(
        nc, topology.TELEMETRY_STREAM, f"{subjects.TELEMETRY}.*", after_seq=marks.telemetry
    ):
        if needle not in body:
            continue
        data = json.loads(body)["data"]
        if data.get("rollout_id") != rollout_id:
            continue
        key = (data["device_id"], int(data["wave"]))
        first_window.setdefault(key, at)
    events = []
    for _, at, _, body in await scan(nc, topology.EVENTS_STREAM, f"{subjects.EVT}.>", after_seq=marks.events):
        if needle not in body:
            continue
        envelope = json.loads(body)
        if envelope["data"].get("rollout_id") == rollout_id:
            envelope["_at"] = at
            events.append(envelope)
    return Timeline(writes=writes, statuses=statuses, first_window=first_window, events=events)


# --- the runs -------------------------------------------------------------------------------------


async def register(nc: Client, store: ArtifactStore, version: str, seed: int, home: Path) -> ModelDetail:
    model, _ = write_sample(home / "models" / version, seed=seed)
    staged = store.upload_staging(model)
    registry = RegistryClient(nc, source="bench")
    _, outcome = await registry.submit(
        RegisterModel(name=MODEL, version=version, artifact=ObjectRef(key=staged.key)), wait=60
    )
    if outcome is None or outcome.status != "applied":
        raise RuntimeError(f"registering {MODEL} {version} failed: {outcome}")
    return await registry.get_model(MODEL, version)


async def record_of(nc: Client, rollout_id: str) -> RolloutRecord | None:
    kv = await nc.jetstream().key_value(topology.KV_ROLLOUTS)
    try:
        entry = await kv.get(rollout_id)
    except Exception:  # noqa: BLE001 - not written yet, or the server is busy: look again
        return None
    return RolloutRecord.model_validate_json(entry.value or b"")


async def until_ended(
    nc: Client, rollout_id: str, *, timeout: float, show: Callable[[RolloutRecord], None]
) -> RolloutRecord:
    deadline = time.monotonic() + timeout
    last_shown = ""
    while True:
        record = await record_of(nc, rollout_id)
        if record is not None:
            line = f"{record.state} wave {record.wave}"
            if line != last_shown:
                show(record)
                last_shown = line
            if record.state in ("completed", "rolled_back", "aborted", "paused"):
                return record
        if time.monotonic() > deadline:
            raise RuntimeError(f"rollout {rollout_id} did not end in {timeout:.0f} s ({last_shown})")
        await asyncio.sleep(0.1)


async def inventory_size(nc: Client) -> int:
    prefix = f"$KV.{topology.KV_DEVICES}."
    info = await nc.jetstream().stream_info(f"KV_{topology.KV_DEVICES}", subjects_filter=prefix + ">")
    return len(info.state.subjects or {})


def ready_times(record: RolloutRecord, wave_index: int, line: Timeline) -> list[datetime]:
    """When each of the wave's devices became healthy as the rollout defines it: active on the
    revision the rollout wrote it in this wave, and its first window of this wave folded in."""
    wave = record.waves[wave_index]
    out = []
    for device_id, artifact in wave.devices.items():
        digest = record.artifacts[artifact].digest
        ours = [rev for _, rev, doc in line.writes.get(device_id, []) if doc and doc.get("wave") == wave_index]
        if not ours:
            continue
        revision = ours[-1]
        active = [
            s["_at"]
            for s in line.statuses
            if s["device_id"] == device_id
            and s["desired_revision"] == revision
            and s["step"] == "active"
            and s["digest"] == digest
        ]
        window = line.first_window.get((device_id, wave_index))
        if active and window is not None:
            out.append(max(min(active), window))
    return sorted(out)


def wave_results(record: RolloutRecord, line: Timeline, started: datetime) -> list[WaveResult]:
    results = []
    firsts: list[datetime | None] = []
    lasts: list[datetime | None] = []
    for wave in record.waves:
        times = [
            at for d in wave.devices for at, _, doc in line.writes.get(d, []) if doc and doc.get("wave") == wave.index
        ]
        firsts.append(min(times) if times else None)
        lasts.append(max(times) if times else None)
    for wave in record.waves:
        size = len(wave.devices)
        needed = math.ceil(record.spec.install_threshold * size)
        ready = ready_times(record, wave.index, line) if wave.verdict is not None else []
        last_needed = ready[needed - 1] if needed and len(ready) >= needed else None
        first, last = firsts[wave.index], lasts[wave.index]
        following = firsts[wave.index + 1] if wave.index + 1 < len(firsts) else None
        results.append(
            WaveResult(
                index=wave.index,
                percent=wave.percent,
                devices=size,
                needed=needed,
                first_write_s=(first - started).total_seconds() if first else math.nan,
                writes_s=(last - first).total_seconds() if first and last else math.nan,
                install_s=(last_needed - first).total_seconds() if first and last_needed else None,
                transition_s=(following - last_needed).total_seconds() if following and last_needed else None,
                noticed_s=(wave.installed_at - last_needed).total_seconds()
                if wave.installed_at and last_needed
                else None,
                verdict=wave.verdict,
            )
        )
    return results


async def run_rollout(
    nc: Client, name: str, cmd: StartRollout, *, timeout: float, settle: float = 0.0
) -> tuple[RolloutRecord, Timeline, datetime, float]:
    """Start `cmd`, follow it to its end, and read its timeline `settle` seconds later (a revert's
    devices report back after the rollout has written every revert)."""
    marks = await Marks.now(nc)
    sent = time.monotonic()
    _, outcome = await bus.send_command(nc, cmd, source="bench", wait=60)
    if outcome is None or outcome.status != "applied":
        raise RuntimeError(f"{name}: the rollout was not started: {outcome}")
    record = await until_ended(
        nc,
        cmd.rollout_id or "",
        timeout=timeout,
        show=lambda r: console.print(f"  {name}: {r.state}, wave {r.wave} ({time.monotonic() - sent:.1f} s)"),
    )
    await asyncio.sleep(settle)
    line = await timeline(nc, marks, record.rollout_id)
    started = next(e["_at"] for e in line.events if e["type"] == "rollout.started")
    return record, line, started, sent


def end_of(line: Timeline, event_type: str) -> datetime | None:
    return next((e["_at"] for e in line.events if e["type"] == event_type), None)


async def run(stack: Stack, args: argparse.Namespace, home: Path, fleet: subprocess.Popen[bytes]) -> dict[str, Any]:
    settings = stack.admin_settings
    nc = await bus.connect(settings, name="bench-rollout")
    store = ArtifactStore.from_settings(settings)
    try:
        v1 = await register(nc, store, "1.0", 7101, home)
        v2 = await register(nc, store, "2.0", 7102, home)
        await register(nc, store, "3.0", 7103, home)
        selector = Selector(labels={"fleet": "bench"})
        t0 = time.monotonic()
        while await inventory_size(nc) < args.devices:
            if time.monotonic() - t0 > 120:
                raise RuntimeError(f"only {await inventory_size(nc)} of {args.devices} devices in the inventory")
            await asyncio.sleep(0.5)
        console.print(f"inventory: {args.devices} devices after {time.monotonic() - t0:.1f} s")
        rollouts: list[RolloutResult] = []

        setup = StartRollout(
            rollout_id="bench-setup",
            model=MODEL,
            ref=v1.version.version,
            selector=selector,
            waves=[Wave(percent=100)],
            soak_seconds=0,
        )
        record, line, started, _ = await run_rollout(nc, "setup (v1, one wave)", setup, timeout=args.timeout)
        rollouts.append(_result("setup", record, line, started))
        if record.state != "completed":
            raise RuntimeError(f"the setup rollout ended {record.state}: {record.reason}")
        await asyncio.sleep(10)  # a baseline of v1 windows for the gates (new models' first windows are 1 s)

        gates: list[Gate] = [
            parse_gate("error_rate<=0.05@20"),
            # Hodges-Lehmann over the whole latency distribution, robust to a noisy tail: each
            # artifact's latencies come from one measurement on this (shared, busy) host.
            parse_gate("latency_p95_ms<=x2@20"),
        ]
        measured = StartRollout(
            rollout_id="bench-waves",
            model=MODEL,
            ref=v2.version.version,
            selector=selector,
            waves=[Wave(percent=p) for p in (1, 10, 50, 100)],
            gates=gates,
            soak_seconds=0,
        )
        record, line, started, sent = await run_rollout(
            nc, "measured (v2, 1/10/50/100)", measured, timeout=args.timeout
        )
        main = _result("measured", record, line, started)
        rollouts.append(main)
        if record.state != "completed":
            gates_seen = [g.model_dump(mode="json") for w in record.waves for g in w.gates]
            raise RuntimeError(f"the measured rollout ended {record.state}: {record.reason}; gates {gates_seen}")
        await asyncio.sleep(10)

        revert_cmd = StartRollout(
            rollout_id="bench-revert",
            model=MODEL,
            ref="3.0",
            selector=selector,
            waves=[Wave(percent=10), Wave(percent=100)],
            gates=[Gate(metric="latency_p50_ms", comparator="<=", threshold=0.0001, min_samples=20)],
            soak_seconds=0,
        )
        revert_record, revert_line, revert_started, _ = await run_rollout(
            nc, "revert (v3, gate fails)", revert_cmd, timeout=args.timeout, settle=20.0
        )
        rollouts.append(_result("revert", revert_record, revert_line, revert_started))
        revert = _revert(revert_record, revert_line, v2)
        simulator_rss = rss_mb(fleet.pid)
    finally:
        await nc.close()
    completed = end_of(line, "rollout.completed")
    transitions = [w.transition_s for w in main.waves if w.transition_s is not None]
    return {
        "devices": args.devices,
        "classes": MIX,
        "window_seconds": args.window_seconds,
        "total_s": (completed - started).total_seconds() if completed else None,
        "waves": [asdict(w) for w in main.waves],
        "install_s": {str(w.index): w.install_s for w in main.waves},
        "wave_transition_p50_s": statistics.median(transitions) if transitions else None,
        "wave_transitions_s": transitions,
        **revert,
        "rollouts": [asdict(r) for r in rollouts],
        "fleet_process_rss_mb": simulator_rss,
        "machine": {"cpus": _cpus(), "python": platform.python_version(), "platform": platform.platform()},
        "targets": {"total_s": 30, "wave_transition_p50_s": 0.5, "revert_s": 5},
    }


def start_fleet(settings: Settings, args: argparse.Namespace, home: Path) -> subprocess.Popen[bytes]:
    """`slmops fleet simulate` in its own process, with the simulator's credentials, until stopped."""
    env = os.environ | {
        "SLMOPS_HOME": str(settings.home),
        "SLMOPS_NATS_URL": settings.nats_url,
        "SLMOPS_NATS_CREDS": str(settings.auth_dir / "creds" / "simulator-fleet.creds"),
        "SLMOPS_S3_ENDPOINT": settings.s3_endpoint,
    }
    command = [sys.executable, "-m", "shared.cli.main", "fleet", "simulate", "--devices", str(args.devices)]
    command += ["--mix", ",".join(f"{name}={weight * 100:g}" for name, weight in MIX.items())]
    command += ["--real-inference", "0", "--duration", "0", "--id-prefix", "bench"]
    command += ["--window", str(args.window_seconds), "--rate", str(args.request_rate)]
    command += ["--heartbeat", str(args.heartbeat_seconds)]
    log = (home / "fleet.log").open("ab")
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _result(name: str, record: RolloutRecord, line: Timeline, started: datetime) -> RolloutResult:
    ended = end_of(line, "rollout.completed") or end_of(line, "rollout.rolled_back")
    return RolloutResult(
        name=name,
        rollout_id=record.rollout_id,
        state=record.state,
        devices=sum(len(w.devices) for w in record.waves),
        total_s=(ended - started).total_seconds() if ended else None,
        waves=wave_results(record, line, started),
        reason=record.reason,
    )


def _revert(record: RolloutRecord, line: Timeline, previous: ModelDetail) -> dict[str, Any]:
    """From the Failed verdict to the last revert write, and to every touched device active again
    on what it had (the statuses about the revert writes)."""
    failed = next(
        (e["_at"] for e in line.events if e["type"] == "gate.verdict" and e["data"]["verdict"] == "Failed"), None
    )
    if failed is None or record.state != "rolled_back":
        return {"revert_s": None, "revert_writes_s": None, "reverted": record.reverted, "revert_state": record.state}
    reverts: dict[str, tuple[datetime, int]] = {}
    for device_id, writes in line.writes.items():
        for at, revision, doc in writes:
            if at >= failed and (doc is None or doc.get("rollout_id") != record.rollout_id):
                reverts[device_id] = (at, revision)
    back: dict[str, datetime] = {}
    for status in line.statuses:
        device_id = status["device_id"]
        if device_id in reverts and status["desired_revision"] == reverts[device_id][1] and status["step"] == "active":
            back.setdefault(device_id, status["_at"])
    touched = record.reverted
    return {
        "revert_devices": touched,
        "revert_writes": len(reverts),
        "reverted_back": len(back),
        "revert_writes_s": (max(at for at, _ in reverts.values()) - failed).total_seconds() if reverts else None,
        "revert_s": (max(back.values()) - failed).total_seconds() if len(back) == touched and back else None,
        "revert_state": record.state,
        "previous_version": previous.version.version,
    }


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def print_result(result: dict[str, Any]) -> None:
    table = Table(
        title=f"rollout of {result['devices']:,} simulated devices (windows every {result['window_seconds']:g} s)"
    )
    for column in (
        "wave",
        "%",
        "devices",
        "needed",
        "first write (s)",
        "writes (s)",
        "install (s)",
        "→ next (s)",
        "of which noticing (s)",
        "verdict",
    ):
        table.add_column(column, justify="right")
    for w in result["waves"]:
        table.add_row(
            str(w["index"]),
            f"{w['percent']:g}",
            f"{w['devices']:,}",
            f"{w['needed']:,}",
            _f(w["first_write_s"]),
            _f(w["writes_s"]),
            _f(w["install_s"]),
            _f(w["transition_s"]),
            _f(w["noticed_s"]),
            str(w["verdict"]),
        )
    console.print(table)
    summary = Table(title="against the targets")
    for column in ("measure", "value", "target"):
        summary.add_column(column, justify="right")
    summary.add_row("total_s", _f(result["total_s"]), "≤ 30")
    summary.add_row("wave_transition_p50_s", _f(result["wave_transition_p50_s"]), "≤ 0.5")
    summary.add_row(
        f"revert_s ({result.get('reverted_back', 0):,} of {result.get('revert_devices', 0):,} back)",
        _f(result["revert_s"]),
        "≤ 5",
    )
    summary.add_row("revert_writes_s", _f(result["revert_writes_s"]), "")
    console.print(summary)


def _f(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument(
        "--window-seconds", type=float, default=30.0, help="telemetry window (a new model's first is 1 s)"
    )
    parser.add_argument("--request-rate", type=float, default=20.0)
    parser.add_argument("--heartbeat-seconds", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds each rollout may take")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rollout.json")
    args = parser.parse_args()
    started = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stack's processes on the way out
    os.environ |= {"SLMOPS_OTEL_EXPORTER": "none", "SLMOPS_LOG_LEVEL": "INFO"}  # the services' processes
    with tempfile.TemporaryDirectory(prefix="slmops-bench-rollout-") as tmp:
        home = Path(tmp)
        stack = Stack(Settings(home=home, otel_exporter="none"), nats_port=0, s3_port=0, services=SERVICES)
        fleet: subprocess.Popen[bytes] | None = None
        try:
            stack.start(ready_timeout=120)
            fleet = start_fleet(stack.admin_settings, args, home)
            result = asyncio.run(run(stack, args, home, fleet))
        finally:
            if fleet is not None:
                stop_process(fleet, timeout=20)
            stack.stop()
    result["bench_seconds"] = time.monotonic() - started
    print_result(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    console.print(f"wrote {args.out} ({result['bench_seconds']:.0f} s in all)")
    ok = result["rollouts"][1]["state"] == "completed" and result["revert_s"] is not None
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
