"""`make bench-telemetry`: the telemetry service ingesting a fleet's windows, against a bare consumer.

Starts its own nats-server (JetStream, authentication on), ensures the topology, and preloads the
SLMOPS_TELEMETRY stream with `--windows-per-device` consecutive 10 s windows (schema 2) from each of
`--devices` devices (`dev-00000`, ...), each on its own subject, as the agent sends them (an envelope
with a deterministic id, repeated in `Nats-Msg-Id`): three classes (rpi5/jetson/gateway 60/30/10),
`--rollout-devices` of them (stratified by class) in rollout `bench` wave 0 on a new digest, the rest
on the old digest without a rollout; 20-60 requests per window with log-normal latencies (the new
digest about 5 % slower, twice the error rate). A few hundred bodies are built with pydantic and
specialised per device and window by replacing fixed-width placeholders (device id, times, id).

Then, in this order, on the same stream:

1. bare: a plain nats-py pull consumer on its own durable (`fetch(500)`, `json.loads` each body,
   `msg.ack()` each) reads every window. Timer: first fetch to the last ack flushed.
2. service: `slmops service run telemetry` as its own process, started after the preload. Timer:
   from the first poll (every 10 ms, consumer info) that sees its durable `telemetry-windows`
   deliver anything, to the first scrape of its /metrics (every 0.25 s, 20 ms from 95 %) whose
   `slmops_telemetry_windows_total` counts every window. Its start-up (imports, connect, topology
   checks, snapshot restore) is reported apart, not in the rate.
3. gates: `--gates` `telemetry.evaluate_gate` round trips (one at a time, each publishing its
   gate.verdict, as the rollout service asks) over the whole aggregate: absolute, difference, ratio
   and Mann-Whitney gates against the old digest, per class and for all classes.

`--py-spy PATH` (e.g. `pip install --target /tmp/pyspy py-spy`) samples the service from its first
delivery to its last count and prints its top functions, by own and inclusive samples (the rates
of that run then carry py-spy's overhead).

Prints a table and writes bench/results/telemetry.json. Exits 1 only on an error (a window not
counted, the service dying, ...), never on a missed target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from nats.aio.client import Client  # noqa: E402
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy  # noqa: E402
from nats.js.errors import NotFoundError  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from services.edge_agent.fleet.report import percentile  # noqa: E402
from services.edge_agent.fleet.resources import process_cpu_seconds  # noqa: E402
from shared import bus, subjects, topology  # noqa: E402
from shared.auth import bootstrap  # noqa: E402
from shared.clients.rpc import health  # noqa: E402
from shared.clients.telemetry import TelemetryClient  # noqa: E402
from shared.histogram import ExponentialHistogram  # noqa: E402
from shared.messages.device import ExponentialLatency, OutputMoments, TelemetryWindow  # noqa: E402
from shared.messages.envelope import decode_fast, deterministic_id, encode, wrap  # noqa: E402
from shared.messages.rollout import Gate  # noqa: E402
from shared.messages.telemetry import EvaluateGate  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.stack.servers import free_port, start_nats, stop_process  # noqa: E402

SERVICE = "telemetry"
ROLLOUT = "bench"
OLD = deterministic_id("bench-telemetry", "old-model")
NEW = deterministic_id("bench-telemetry", "new-model")
CLASSES = {"rpi5": 45.0, "jetson": 15.0, "gateway": 25.0}  # median latency (ms) of the old digest
SLOWER = 1.05  # the new digest's latency, relative
ERROR_RATE = {OLD: 0.005, NEW: 0.01}
VARIANTS = 50  # distinct bodies per (class, digest)
BUCKET = 10  # seconds per window (the service's default bucket)
BARE_DURABLE = "bench-bare"
BARE_BATCH = 500
TARGETS = {"ratio": 1.0, "service_windows_per_s": 15_000.0, "gate_eval_p99_ms": 50.0}

# Placeholders of the pre-built bodies, each as wide as what replaces it.
PH_DEVICE = "dev-XXXXX"
PH_START = datetime(2000, 1, 1, 0, 0, 0, tzinfo=UTC)
PH_END = PH_START + timedelta(seconds=BUCKET)
PH_ID = "f" * 64
# Frames under which all the process's work runs (the CLI, the event loop): left out of "inclusive".
WRAPPERS = re.compile(r"\((typer/|asyncio/|<frozen runpy>|shared/cli/|threading\.py)")
PROBLEM = re.compile(r'"level": "(warning|error|critical)"|Traceback', re.IGNORECASE)
console = Console(width=150)


def device_id(i: int) -> str:
    return f"dev-{i:05d}"


def device_class(i: int) -> str:
    """rpi5=60, jetson=30, gateway=10 (the simulator's default mix)."""
    r = i % 10
    return "rpi5" if r < 6 else "jetson" if r < 9 else "gateway"


def in_rollout(i: int, rollout_devices: int, devices: int) -> bool:
    """Stratified: the first `rollout_devices / devices` of every block of 100 devices' classes."""
    per_block = max(1, round(100 * rollout_devices / devices))
    return i % 100 < per_block and i < devices


def _iso(at: datetime) -> bytes:
    """A datetime as pydantic writes it (UTC, whole seconds): `2000-01-01T00:00:00Z`."""
    return at.strftime("%Y-%m-%dT%H:%M:%SZ").encode()


def templates(rng: np.random.Generator) -> dict[tuple[str, str], list[bytes]]:
    """Per (class, digest), `VARIANTS` envelope bodies with placeholders for device, times and id."""
    out: dict[tuple[str, str], list[bytes]] = {}
    for cls, median in CLASSES.items():
        for digest in (OLD, NEW):
            rollout_id, wave = (ROLLOUT, 0) if digest == NEW else (None, None)
            scale = median * (SLOWER if digest == NEW else 1.0)
            bodies = []
            for _ in range(VARIANTS):
                n = int(rng.integers(20, 61))
                latencies = rng.lognormal(np.log(scale), 0.35, size=n)
                errors = int(rng.binomial(n, ERROR_RATE[digest]))
                histogram = ExponentialHistogram(scale=4)
                for value in latencies:
                    histogram.record(float(value))
                served = n - errors
                w = TelemetryWindow(
                    device_id=PH_DEVICE,
                    device_class=cls,
                    model_digest=digest,
                    rollout_id=rollout_id,
                    wave=wave,
                    window_start=PH_START,
                    window_end=PH_END,
                    request_count=n,
                    error_count=errors,
                    latency=ExponentialLatency.of(histogram),
                    outputs={"norm": OutputMoments(count=served, mean=float(rng.normal(1.0, 0.02)), variance=0.01)}
                    if served
                    else {},
                    cpu_percent=float(rng.uniform(5, 60)),
                    ram_mb=float(rng.uniform(150, 600)),
                )
                body = encode(wrap(w, source=f"device:{PH_DEVICE}", id=PH_ID, time=PH_END))
                assert body.count(_iso(PH_START)) == 1 and body.count(_iso(PH_END)) == 2, "placeholder clash"
                bodies.append(body)
            out[(cls, digest)] = bodies
    return out


def build_messages(
    args: argparse.Namespace, base: datetime, rng: np.random.Generator
) -> tuple[list[tuple[str, bytes, str]], Counter[tuple[str, str]]]:
    """(subject, body, msg id) in the order devices would send them (window after window), and the
    windows per (class, digest)."""
    bodies = templates(rng)
    messages: list[tuple[str, bytes, str]] = []
    cohorts: Counter[tuple[str, str]] = Counter()
    dev, start, end = PH_DEVICE.encode(), _iso(PH_START), _iso(PH_END)
    idb = PH_ID.encode()
    devices = [
        (device_id(i), device_class(i), NEW if in_rollout(i, args.rollout_devices, args.devices) else OLD)
        for i in range(args.devices)
    ]
    subjects_of = [subjects.telemetry(d) for d, _, _ in devices]
    for k in range(args.windows_per_device):
        at = base + timedelta(seconds=BUCKET * k)
        start_k, end_k = _iso(at), _iso(at + timedelta(seconds=BUCKET))
        iso_k = at.isoformat()
        for i, (did, cls, digest) in enumerate(devices):
            template = bodies[(cls, digest)][(i * 7 + k) % VARIANTS]
            msg_id = deterministic_id(did, iso_k)  # what the agent sends: one id per device and window
            body = (
                template.replace(dev, did.encode())
                .replace(start, start_k)
                .replace(end, end_k)
                .replace(idb, msg_id.encode())
            )
            messages.append((subjects_of[i], body, msg_id))
            cohorts[(cls, digest)] += 1
    return messages, cohorts


def check_bodies(messages: list[tuple[str, bytes, str]], sample: int = 2000) -> None:
    """A sample of the patched bodies decodes as the service decodes them, on the right subject."""
    step = max(1, len(messages) // sample)
    for subject, body, msg_id in messages[::step]:
        env = decode_fast(body, expected=(TelemetryWindow,))
        assert subjects.reported_on(env.data) == subject, (subject, env.data.device_id)
        assert env.id == msg_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--windows-per-device", type=int, default=20)
    parser.add_argument("--rollout-devices", type=int, default=1_000)
    parser.add_argument("--gates", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for each consumer to read everything")
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="PATH",
        help="py-spy executable: sample the service while it ingests (rates then include its overhead)",
    )
    parser.add_argument("--keep-home", action="store_true", help="keep the temporary home (service log, server data)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "telemetry.json")
    args = parser.parse_args()
    if args.devices > 100_000:
        parser.error("--devices: at most 100,000 (ids are dev-00000 .. dev-99999)")

    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="slmops-bench-telemetry-")
    home = Path(tmp)
    authority = bootstrap.prepare(home / "auth", [SERVICE])
    nats = start_nats(
        port=free_port(),
        store_dir=home / "nats",
        log_dir=home / "logs",
        config=authority.directory / "nats-auth.conf",
    )
    try:
        settings = Settings(
            home=home,
            nats_url=nats.url,
            nats_creds=authority.creds_path("admin", bootstrap.ADMIN),
            otel_exporter="none",
        )
        result = asyncio.run(run(settings, args, home))
    finally:
        nats.stop()
        if not args.keep_home:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    result["bench_seconds"] = time.monotonic() - started
    print_result(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    console.print(f"wrote {args.out} ({result['bench_seconds']:.0f} s in all)")
    return 1 if result["errors"] else 0


async def run(settings: Settings, args: argparse.Namespace, home: Path) -> dict[str, Any]:
    nc = await bus.connect(settings, name="bench")
    js = nc.jetstream(publish_async_max_pending=4000)
    await topology.ensure_topology(js)
    errors: list[str] = []
    load_at_start = list(os.getloadavg())

    # --- preload -------------------------------------------------------------------------------
    now = datetime.now(UTC).replace(microsecond=0)
    last = now.replace(second=now.second - now.second % BUCKET)
    base = last - timedelta(seconds=BUCKET * args.windows_per_device)
    t = time.monotonic()
    messages, cohorts = build_messages(args, base, np.random.default_rng(9))
    check_bodies(messages)
    build_s = time.monotonic() - t
    total = len(messages)
    avg_bytes = sum(len(b) for _, b, _ in messages) / total
    console.print(f"built {total:,} windows ({avg_bytes:.0f} B on average) in {build_s:.1f} s")

    t = time.monotonic()
    futures = [await js.publish_async(s, b, headers={"Nats-Msg-Id": i}) for s, b, i in messages]
    acks = await asyncio.gather(*futures, return_exceptions=True)
    publish_s = time.monotonic() - t
    failed = [a for a in acks if isinstance(a, BaseException)]
    duplicates = sum(1 for a in acks if not isinstance(a, BaseException) and a.duplicate)
    if failed or duplicates:
        errors.append(f"preload: {len(failed)} publishes failed ({failed[:1]}), {duplicates} taken as duplicates")
    info = await js.stream_info(topology.TELEMETRY_STREAM)
    stored = int(info.state.messages)
    first_seq, last_seq = int(info.state.first_seq), int(info.state.last_seq)
    console.print(
        f"published {total:,} windows in {publish_s:.1f} s ({total / publish_s:,.0f}/s, acked by JetStream); "
        f"the stream holds {stored:,} ({info.state.bytes / 2**20:.0f} MiB)"
    )
    if stored != total:
        errors.append(f"the stream holds {stored} windows, {total} were published")
    del messages, acks, futures

    # --- bare consumer -------------------------------------------------------------------------
    bare = await bare_consumer(nc, stored, timeout=args.timeout)
    console.print(f"bare consumer: {bare['windows']:,} windows in {bare['seconds']:.2f} s = {bare['per_s']:,.0f}/s")
    if bare["windows"] != stored:
        errors.append(f"the bare consumer read {bare['windows']} of {stored} windows")

    # --- the service ---------------------------------------------------------------------------
    service = await run_service(settings, nc, home, args, stored, last_seq, errors, since=base - timedelta(seconds=60))
    await nc.drain()

    bare_rate = bare["per_s"]
    service_rate = service.pop("per_s")
    gate_p50 = service["gates"].get("p50_ms")
    gate_p99 = service["gates"].get("p99_ms")
    result: dict[str, Any] = {
        "benchmark": "telemetry",
        "time": datetime.now(UTC).isoformat(),
        "host": {
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": list(os.getloadavg()),
        },
        "code": code_version(),
        "authentication": True,
        "profiled_with_py_spy": args.py_spy is not None,
        "windows": stored,
        "devices": args.devices,
        "windows_per_device": args.windows_per_device,
        "rollout_devices": sum(1 for i in range(args.devices) if in_rollout(i, args.rollout_devices, args.devices)),
        "stream_seq": [first_seq, last_seq],
        "cohorts": {f"{cls}/{'new' if d == NEW else 'old'}": n for (cls, d), n in sorted(cohorts.items())},
        "buckets": args.windows_per_device,
        "window_start_range": [base.isoformat(), last.isoformat()],
        "avg_body_bytes": avg_bytes,
        "build_seconds": build_s,
        "preload_seconds": publish_s,
        "preload_windows_per_s": total / publish_s,
        "bare_windows_per_s": bare_rate,
        "bare": bare,
        "service_windows_per_s": service_rate,
        "ratio": service_rate / bare_rate if bare_rate and service_rate else None,
        "gate_eval_p50_ms": gate_p50,
        "gate_eval_p99_ms": gate_p99,
        "rss_mb": service.get("rss_mb"),
        "service": service,
        "timers": {
            "bare": "first fetch(500) request to the last msg.ack() flushed (json.loads + ack of each message)",
            "service": "first 10 ms consumer-info poll seeing durable telemetry-windows deliver to the first "
            "/metrics scrape (every 0.25 s, every 20 ms from 95 %) counting every window "
            "(slmops_telemetry_windows_total); start-up apart",
            "gate": "TelemetryClient.evaluate_gate round trip from this process, one at a time, publish=True",
        },
        "errors": errors,
    }
    result["targets"] = {
        "ratio": {"target": f">= {TARGETS['ratio']}", "value": result["ratio"], "met": _ge(result["ratio"], "ratio")},
        "service_windows_per_s": {
            "target": f">= {TARGETS['service_windows_per_s']:,.0f}",
            "value": service_rate,
            "met": _ge(service_rate, "service_windows_per_s"),
        },
        "gate_eval_p99_ms": {
            "target": f"<= {TARGETS['gate_eval_p99_ms']}",
            "value": gate_p99,
            "met": gate_p99 is not None and gate_p99 <= TARGETS["gate_eval_p99_ms"],
        },
    }
    return result


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the service's code differed from it (others edit this checkout)."""

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = git("status", "--porcelain", "--", "services/telemetry", "shared").splitlines()
    return {"commit": git("rev-parse", "HEAD") or None, "uncommitted_service_or_shared_files": dirty}


def _ge(value: float | None, target: str) -> bool:
    return value is not None and value >= TARGETS[target]


async def bare_consumer(nc: Client, expected: int, *, timeout: float) -> dict[str, Any]:
    """Every window through a plain nats-py pull consumer: fetch 500, json.loads, ack each."""
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        f"{subjects.TELEMETRY}.>",
        durable=BARE_DURABLE,
        stream=topology.TELEMETRY_STREAM,
        config=ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, max_ack_pending=5000, ack_wait=60
        ),
    )
    seen = requests = 0
    start = time.monotonic()
    deadline = start + timeout
    while seen < expected and time.monotonic() < deadline:
        try:
            msgs = await sub.fetch(BARE_BATCH, timeout=5)
        except TimeoutError:
            continue
        for msg in msgs:
            body = json.loads(msg.data)
            requests += body["data"]["request_count"]
            await msg.ack()
        seen += len(msgs)
    await nc.flush()
    seconds = time.monotonic() - start
    await sub.unsubscribe()
    return {"windows": seen, "requests": requests, "seconds": seconds, "per_s": seen / seconds, "batch": BARE_BATCH}


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
        return reply.read().decode()


def metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, MiB."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return out


async def run_service(
    settings: Settings,
    nc: Client,
    home: Path,
    args: argparse.Namespace,
    expected: int,
    last_seq: int,
    errors: list[str],
    *,
    since: datetime,
) -> dict[str, Any]:
    port = free_port()
    env = os.environ | {
        "SLMOPS_HOME": str(settings.home),
        "SLMOPS_NATS_URL": settings.nats_url,
        "SLMOPS_NATS_CREDS": str(settings.auth_dir / "creds" / f"service-{SERVICE}.creds"),
        "SLMOPS_OTEL_EXPORTER": "none",
        "SLMOPS_TELEMETRY_METRICS_PORT": str(port),
    }
    log_path = home / "telemetry.log"
    js = nc.jetstream()
    out: dict[str, Any] = {"metrics_port": port, "log": str(log_path)}
    with log_path.open("ab") as log:
        spawned = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "shared.cli.main", "service", "run", SERVICE],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        ready: float | None = None
        first: float | None = None
        spy: subprocess.Popen[bytes] | None = None
        deadline = spawned + 60
        # Start-up: until the durable delivers (its consumption started) and the service says ready.
        while first is None or ready is None:
            if proc.poll() is not None:
                raise RuntimeError(f"the telemetry service exited ({proc.returncode}); see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the telemetry service did not start consuming in 60 s; see {log_path}")
            if first is None:
                with contextlib.suppress(NotFoundError):
                    info = await js.consumer_info(topology.TELEMETRY_STREAM, topology.TELEMETRY_WINDOWS.durable)
                    if info.delivered.stream_seq > 0:
                        first = time.monotonic()
                        cpu_first = process_cpu_seconds(proc.pid)
                        if args.py_spy is not None:
                            spy = start_py_spy(args.py_spy, proc.pid, home / "py-spy.txt")
            if ready is None and await health(nc, SERVICE, timeout=0.2):
                ready = time.monotonic()
            await asyncio.sleep(0.01)
        assert first is not None and ready is not None
        # Ingest: until /metrics counts every window.
        counted = 0.0
        done: float | None = None
        acked: float | None = None
        timeline: list[tuple[float, float]] = []
        end = first + args.timeout
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"the telemetry service exited ({proc.returncode}); see {log_path}")
            with contextlib.suppress(OSError):
                text = await asyncio.to_thread(metrics_text, port)
                counted = metric(text, "slmops_telemetry_windows_total") or 0.0
                timeline.append((time.monotonic() - first, counted))
                if counted >= expected:
                    done = time.monotonic()
                    break
            # Scraping costs the service a little (a thread per request): rarely, then often near the end.
            await asyncio.sleep(0.25 if counted < 0.95 * expected else 0.02)
        cpu_done = process_cpu_seconds(proc.pid)
        if spy is not None:
            out["profile"] = stop_py_spy(spy, home / "py-spy.txt")
            spy = None
        if done is None:
            errors.append(f"the service counted {counted:.0f} of {expected} windows in {args.timeout:.0f} s")
        # All acked (server side): shortly after the last count.
        for _ in range(200):
            info = await js.consumer_info(topology.TELEMETRY_STREAM, topology.TELEMETRY_WINDOWS.durable)
            if info.ack_floor.stream_seq >= last_seq:
                acked = time.monotonic()
                break
            await asyncio.sleep(0.01)
        seconds = (done - first) if done is not None else None
        out |= {
            "spawn_to_first_delivery_s": first - spawned,
            "spawn_to_ready_s": ready - spawned,
            "first_delivery_to_counted_s": seconds,
            "first_delivery_to_all_acked_s": (acked - first) if acked is not None else None,
            "ready_to_counted_s": (done - ready) if done is not None else None,
            "cpu_seconds_ingest": cpu_done - cpu_first,
            "cpu_share_of_one_core": (cpu_done - cpu_first) / seconds if seconds else None,
            "counted_timeline": _thin(timeline, 40),
            "per_s": expected / seconds if seconds else 0.0,
        }
        # Cross-check with the service's own summary, and what else it counted.
        text = await asyncio.to_thread(metrics_text, port)
        for name in ("windows", "rejected", "duplicates", "late", "fold_conflicts", "rollups"):
            out[f"metric_{name}"] = metric(text, f"slmops_telemetry_{name}_total")
        out["metric_fold_position"] = metric(text, "slmops_telemetry_fold_position")
        client = TelemetryClient(nc, source="bench", timeout=30)
        summary = await client.summarize(seconds=(datetime.now(UTC) - since).total_seconds())
        out["summary_windows"] = sum(s.windows for s in summary.cohorts)
        out["summary_cohorts"] = {
            f"{s.cohort.device_class}/{'new' if s.cohort.model_digest == NEW else 'old'}": {
                "windows": s.windows,
                "devices": s.devices,
                "requests": s.requests,
                "error_rate": s.error_rate,
                "latency_p95_ms": s.latency_p95_ms,
            }
            for s in summary.cohorts
        }
        if out["summary_windows"] != expected:
            errors.append(f"the summary counts {out['summary_windows']} windows, {expected} were published")
        folds = await js.stream_info(topology.TELEMETRY_FOLDS_STREAM)
        out["fold_records"] = int(folds.state.messages)
        out["fold_log_mib"] = folds.state.bytes / 2**20
        dlq = await js.stream_info(topology.DLQ_STREAM)
        out["dlq_entries"] = int(dlq.state.messages)

        out["gates"] = await gates(client, args.gates, since=since)
        out["cpu_seconds_total"] = process_cpu_seconds(proc.pid)
        status = proc_status(proc.pid)
        out["rss_mb"] = status.get("VmRSS")
        out["rss_peak_mb"] = status.get("VmHWM")
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        stop_process(proc, timeout=20.0)
    lines = log_path.read_text(errors="replace").splitlines()
    problems = [line for line in lines if PROBLEM.search(line)]
    out["log_lines"] = len(lines)
    out["log_problems"] = len(problems)
    out["log_problem_samples"] = problems[:10]
    return out


def start_py_spy(exe: Path, pid: int, output: Path) -> subprocess.Popen[bytes]:
    """Sample `pid` at 100 Hz (stacks by function, active threads only) until SIGINT."""
    cmd = [str(exe), "record", "--pid", str(pid), "--format", "raw", "--function", "--output", str(output)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=(output.with_suffix(".log")).open("wb"))


def stop_py_spy(spy: subprocess.Popen[bytes], output: Path, top: int = 30) -> dict[str, Any]:
    """Stop sampling; the functions with the most samples, on top of the stack (self) and anywhere
    on it (inclusive), as a share of all samples."""
    spy.send_signal(signal.SIGINT)
    spy.wait(timeout=60)
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in output.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith(("thread ", "process "))]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            if not WRAPPERS.search(frame):
                inclusive[frame] += n

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(frame, round(100 * n / total, 1)) for frame, n in counter.most_common(top)]

    return {"samples": total, "raw": str(output), "self_pct": share(own), "inclusive_pct": share(inclusive)}


def _thin(points: list[tuple[float, float]], n: int) -> list[tuple[float, float]]:
    if len(points) <= n:
        return points
    step = len(points) / n
    return [points[int(i * step)] for i in range(n)] + [points[-1]]


def gate_requests(n: int, since: datetime) -> list[EvaluateGate]:
    kinds = [
        Gate(metric="error_rate", comparator="<=", threshold=0.02),
        Gate(metric="error_rate", comparator="<=", threshold=0.004, compare_to_baseline="difference"),
        Gate(metric="latency_p95_ms", comparator="<=", threshold=1.1, compare_to_baseline="ratio"),
        Gate(metric="latency_p95_ms", comparator="<=", threshold=1.02, compare_to_baseline="ratio"),
        Gate(metric="latency_p95_ms", comparator="<=", threshold=1.1, compare_to_baseline="mann_whitney"),
        Gate(metric="latency_p50_ms", comparator="<=", threshold=1.02, compare_to_baseline="mann_whitney"),
        Gate(metric="latency_p99_ms", comparator="<=", threshold=200.0),
    ]
    classes: list[str | None] = [None, *CLASSES]
    out = []
    for i in range(n):
        out.append(
            EvaluateGate(
                rollout_id=ROLLOUT,
                wave=0,
                device_class=classes[(i // len(kinds)) % len(classes)],
                digests=[NEW],
                baseline_digests=[OLD],
                since=since + timedelta(seconds=BUCKET * (i % 3)),
                gate=kinds[i % len(kinds)],
            )
        )
    return out


async def gates(client: TelemetryClient, n: int, *, since: datetime) -> dict[str, Any]:
    requests = gate_requests(n, since)
    await client.evaluate_gate(requests[0])  # warm-up, not timed
    times: list[float] = []
    verdicts: Counter[str] = Counter()
    per_method: dict[str, list[float]] = {}
    for request in requests:
        t = time.perf_counter()
        evaluation = await client.evaluate_gate(request)
        ms = (time.perf_counter() - t) * 1000
        times.append(ms)
        g = request.gate
        verdicts[f"{g.metric} {g.compare_to_baseline or 'abs'} {g.comparator} {g.threshold}: {evaluation.verdict}"] += 1
        per_method.setdefault(evaluation.method, []).append(ms)
    times.sort()
    return {
        "calls": len(times),
        "p50_ms": percentile(times, 50),
        "p99_ms": percentile(times, 99),
        "max_ms": times[-1],
        "per_method_p50_ms": {m: percentile(sorted(v), 50) for m, v in per_method.items()},
        "per_method_p99_ms": {m: percentile(sorted(v), 99) for m, v in per_method.items()},
        "verdicts": dict(sorted(verdicts.items())),
    }


def print_result(result: dict[str, Any]) -> None:
    s = result["service"]
    table = Table(
        title=f"telemetry: {result['windows']:,} windows from {result['devices']:,} devices "
        f"({result['windows_per_device']} x 10 s each, {result['rollout_devices']:,} in rollout {ROLLOUT!r})",
        caption="bare: first fetch to last ack; service: first delivery to its /metrics counting every window "
        "(start-up apart); gate: evaluate_gate round trip, one at a time",
    )
    for col in ("measure", "value", "target", "met"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    targets = result["targets"]

    def row(name: str, value: str, key: str | None = None) -> None:
        if key is None:
            table.add_row(name, value, "", "")
        else:
            met = targets[key]["met"]
            table.add_row(name, value, targets[key]["target"], "[green]yes[/]" if met else "[red]NO[/]")

    row("bare consumer windows/s", f"{result['bare_windows_per_s']:,.0f}")
    row("service windows/s", f"{result['service_windows_per_s']:,.0f}", "service_windows_per_s")
    row("ratio service / bare", _f(result["ratio"], 2), "ratio")
    row("service: first delivery → all counted", f"{_f(s['first_delivery_to_counted_s'], 2)} s")
    row("service: CPU during ingest (share of a core)", f"{_f(s['cpu_share_of_one_core'], 2)}")
    row(
        "service: spawn → first delivery / ready",
        f"{s['spawn_to_first_delivery_s']:.2f} / {s['spawn_to_ready_s']:.2f} s",
    )
    row("gate eval p50", f"{_f(result['gate_eval_p50_ms'], 2)} ms")
    row("gate eval p99", f"{_f(result['gate_eval_p99_ms'], 2)} ms", "gate_eval_p99_ms")
    row("service RSS at the end (peak)", f"{_f(result['rss_mb'], 0)} ({_f(s.get('rss_peak_mb'), 0)}) MiB")
    row("summary windows / fold records", f"{s['summary_windows']:,} / {s['fold_records']:,}")
    row(
        "rejected / duplicates / late / DLQ",
        f"{s['metric_rejected']:.0f} / {s['metric_duplicates']:.0f} / {s['metric_late']:.0f} / {s['dlq_entries']}",
    )
    row("service log warnings+errors", str(s["log_problems"]))
    console.print(table)
    console.print(
        f"gate verdicts: {s['gates']['verdicts']}; per method p99 ms: "
        f"{ {k: round(v, 2) for k, v in s['gates']['per_method_p99_ms'].items()} }"
    )
    profile = s.get("profile")
    if profile:
        for kind in ("self_pct", "inclusive_pct"):
            top = Table(title=f"py-spy, service ingest: {kind.replace('_pct', '')} % of {profile['samples']} samples")
            top.add_column("%", justify="right")
            top.add_column("function (file:line)")
            for frame, pct in profile[kind][:25]:
                top.add_row(f"{pct:.1f}", frame)
            console.print(top)
    missed = [k for k, t in targets.items() if not t["met"]]
    if missed:
        console.print(f"[bold red]targets missed: {', '.join(missed)}[/] (not an error: exit status stays 0)")
    for error in result["errors"]:
        console.print(f"[bold red]error:[/] {error}")


def _f(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


if __name__ == "__main__":
    raise SystemExit(main())
