"""`make bench-fleet`: 10,000 simulated devices on one machine, converging on new desired states.

Starts its own nats-server, moto S3 server and registry (a subprocess, as in the tests), registers
the tiny sample model in two versions, starts the fleet simulator in this process, waits until
every device's first hello is acknowledged, then runs three changes, each written to the desired
key of every device as fast as the client can:

1. install v1 (every device downloads, verifies, loads, smoke-tests, switches);
2. upgrade to v2 (the same, into the other slot);
3. rollback to v1 (still in the other slot: a switch, no download expected).

For each it measures the time until every device's `active` status for the revision it was given
is acknowledged (from the simulator's own state), per device (from its own KV put) and in total,
and cross-checks by reading every status of the phase back from the SLMOPS_DEVICE stream. The KV
writes and the stream scan run on their own thread and connection; their CPU time is measured on
that thread and subtracted, so "CPU per device" is the simulator's (plus its inference worker).
Prints a table and writes bench/results/fleet.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nats.aio.client import Client  # noqa: E402
from nats.js.api import ConsumerConfig, DeliverPolicy  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from samples.tiny import write_sample  # noqa: E402
from services.edge_agent.fleet.classes import load_classes  # noqa: E402
from services.edge_agent.fleet.config import DEFAULT_MIX, SimulationConfig  # noqa: E402
from services.edge_agent.fleet.mix import parse_mix  # noqa: E402
from services.edge_agent.fleet.report import percentile  # noqa: E402
from services.edge_agent.fleet.resources import cpu_seconds, process_cpu_seconds, rss_mb  # noqa: E402
from services.edge_agent.fleet.simulator import FleetSimulator  # noqa: E402
from shared import bus, topology  # noqa: E402
from shared.artifacts import ArtifactStore  # noqa: E402
from shared.auth import bootstrap  # noqa: E402
from shared.clients import RegistryClient  # noqa: E402
from shared.messages.common import ObjectRef  # noqa: E402
from shared.messages.device import DesiredState  # noqa: E402
from shared.messages.registry import ModelDetail, RegisterModel  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.stack.servers import free_port, start_nats, start_s3, stop_process  # noqa: E402
from shared.stack.supervisor import init_platform, service_health  # noqa: E402

T = TypeVar("T")
MODEL = "bench-tiny"
PUT_CONCURRENCY = 1000
console = Console(width=150)


@dataclass
class Phase:
    name: str
    version: str
    digest: str
    devices: int = 0
    converged: int = 0
    write_seconds: float = 0.0
    puts_per_second: float = 0.0
    total_seconds: float | None = None
    per_device_p50_s: float | None = None
    per_device_p95_s: float | None = None
    per_device_max_s: float | None = None
    seen_p50_s: float | None = None
    seen_p95_s: float | None = None
    install_p50_s: float | None = None
    install_p95_s: float | None = None
    statuses: int = 0
    messages_per_second: float = 0.0
    transfers: int = 0
    download_url_requests: int = 0
    cpu_ms_per_device: float = 0.0
    stream_active: int = 0
    stream_steps: dict[str, int] = field(default_factory=dict)
    stream_wrong_revision: int = 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--mix", default=DEFAULT_MIX)
    parser.add_argument("--connections", type=int, default=None, help="default: one per 500 devices, at most 32")
    parser.add_argument("--real-inference", type=int, default=None, help="default: min(devices, 50)")
    parser.add_argument("--per-device-urls", action="store_true", help="every device asks the registry itself")
    parser.add_argument("--phase-timeout", type=float, default=120.0)
    parser.add_argument(
        "--no-auth",
        action="store_true",
        help="run the server without authentication (the same clients and credentials): what auth costs",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fleet.json")
    args = parser.parse_args()

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="slmops-bench-fleet-") as tmp:
        home = Path(tmp)
        # Authentication on, as everywhere: the registry, the simulator and the bench's own
        # connection each use their own credentials.
        authority = bootstrap.prepare(home / "auth", ["registry"])
        nats = start_nats(
            port=free_port(),
            store_dir=home / "nats",
            log_dir=home / "logs",
            config=None if args.no_auth else authority.directory / "nats-auth.conf",
        )
        s3 = start_s3(port=free_port(), log_dir=home / "logs")
        registry: subprocess.Popen[bytes] | None = None
        try:
            settings = Settings(
                home=home,
                nats_url=nats.url,
                nats_creds=authority.creds_path("admin", bootstrap.ADMIN),
                s3_endpoint=s3.url,
                s3_bucket="slmops-bench",
                otel_exporter="none",
            )
            asyncio.run(init_platform(settings))
            registry = start_registry(settings)
            result = asyncio.run(run(settings, args, home))
        finally:
            if registry is not None:
                stop_process(registry, timeout=20.0)
            for server in (s3, nats):
                server.stop()
    result["bench_seconds"] = time.monotonic() - started
    result["authentication"] = not args.no_auth
    print_result(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    console.print(f"wrote {args.out} ({result['bench_seconds']:.0f} s in all)")
    failed = [p["name"] for p in result["phases"] if p["converged"] != p["devices"]]
    return 1 if failed else 0


def as_simulator(settings: Settings) -> Settings:
    """The simulator speaks for its devices with the simulator's own credentials."""
    return settings.model_copy(update={"nats_creds": settings.auth_dir / "creds" / "simulator-fleet.creds"})


def start_registry(settings: Settings) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "SLMOPS_HOME": str(settings.home),
        "SLMOPS_NATS_URL": settings.nats_url,
        "SLMOPS_NATS_CREDS": str(settings.auth_dir / "creds" / "service-registry.creds"),
        "SLMOPS_S3_ENDPOINT": settings.s3_endpoint,
        "SLMOPS_S3_BUCKET": settings.s3_bucket,
        "SLMOPS_OTEL_EXPORTER": "none",
        "SLMOPS_LOG_LEVEL": "WARNING",
    }
    log = (Path(settings.home) / "registry.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.cli.main", "service", "run", "registry"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the registry exited; see {log.name}")
        if asyncio.run(service_health(settings, ["registry"], timeout=0.5))["registry"]:
            return proc
        time.sleep(0.2)
    stop_process(proc)
    raise RuntimeError("the registry did not become healthy in 60 s")


async def register(nc: Client, store: ArtifactStore, model: Path, version: str) -> ModelDetail:
    staged = store.upload_staging(model)
    cmd = RegisterModel(name=MODEL, version=version, artifact=ObjectRef(key=staged.key))
    registry = RegistryClient(nc, source="bench")
    _, outcome = await registry.submit(cmd, wait=60)
    if outcome is None or outcome.status != "applied":
        raise RuntimeError(f"registering {MODEL} {version} failed: {outcome}")
    return await registry.get_model(MODEL, version)


class Driver:
    """The benchmark's own client (KV writes, stream scans) on a thread of its own, so its CPU time
    can be measured apart from the simulator's and it does not queue behind the simulator's loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="bench-driver", daemon=True)
        self._thread.start()
        self.nc: Client | None = None

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wrap_future(fut)

    async def connect(self) -> None:
        self.nc = await bus.connect(self.settings, name="bench-driver")

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.drain()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    async def thread_cpu(self) -> float:
        return time.thread_time()

    async def stream_seq(self) -> int:
        assert self.nc is not None
        info = await self.nc.jetstream().stream_info(topology.DEVICE_STREAM)
        return int(info.state.last_seq)

    async def put_all(self, states: dict[str, DesiredState]) -> tuple[dict[str, int], dict[str, float], float, float]:
        """Write every device's desired state; returns revisions, per-key put times, start and end."""
        assert self.nc is not None
        kv = await self.nc.jetstream().key_value(topology.KV_DESIRED)
        revisions: dict[str, int] = {}
        put_at: dict[str, float] = {}
        limit = asyncio.Semaphore(PUT_CONCURRENCY)

        async def put(device_id: str, state: DesiredState) -> None:
            async with limit:
                revisions[device_id] = await kv.put(device_id, state.model_dump_json().encode())
                put_at[device_id] = time.monotonic()

        start = time.monotonic()
        await asyncio.gather(*(put(d, s) for d, s in states.items()))
        return revisions, put_at, start, time.monotonic()

    async def scan_statuses(
        self, after_seq: int, revisions: dict[str, int], digest: str
    ) -> tuple[Counter[str], int, int]:
        """Every status on the stream after `after_seq`: steps for these revisions, active devices, strays."""
        assert self.nc is not None
        js = self.nc.jetstream()
        end = await self.stream_seq()
        steps: Counter[str] = Counter()
        active: set[str] = set()
        wrong = 0
        if end <= after_seq:
            return steps, 0, 0
        sub = await js.subscribe(
            "slmops.device.*.status",
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_seq + 1),
        )
        try:
            while True:
                msg = await sub.next_msg(timeout=10)
                data = json.loads(msg.data)["data"]
                if revisions.get(data["device_id"]) == data["desired_revision"]:
                    steps[data["step"]] += 1
                    if data["step"] == "active" and data["digest"] == digest:
                        active.add(data["device_id"])
                else:
                    wrong += 1
                if msg.metadata.num_pending == 0 or msg.metadata.sequence.stream >= end:
                    break
        finally:
            await sub.unsubscribe()
        return steps, len(active), wrong


async def run(settings: Settings, args: argparse.Namespace, home: Path) -> dict[str, Any]:
    nc = await bus.connect(settings, name="bench")
    store = ArtifactStore.from_settings(settings)
    v1_path, _ = write_sample(home / "v1", seed=0)
    v2_path, _ = write_sample(home / "v2", seed=7)
    v1, v2 = await register(nc, store, v1_path, "1.0.0"), await register(nc, store, v2_path, "2.0.0")
    await nc.close()

    config = SimulationConfig(
        devices=args.devices,
        mix=parse_mix(args.mix, load_classes()),
        connections=args.connections,
        real_inference=args.real_inference,
        id_prefix="bench",
        share_download_urls=not args.per_device_urls,
    )
    driver = Driver(settings)
    await driver.call(driver.connect())
    phases: list[Phase] = []
    try:
        rss_before = rss_mb()
        async with FleetSimulator(as_simulator(settings), config) as sim:
            console.print(
                f"{config.devices} devices on {config.connection_count} connections: all hello'd after "
                f"{sim.connected_seconds:.1f} s"
            )
            cpu_start, driver_cpu_start = cpu_seconds(), await driver.call(driver.thread_cpu())
            worker_start = process_cpu_seconds(sim.worker.pid or 0)
            for name, detail in (("install v1", v1), ("upgrade v2", v2), ("rollback v1", v1)):
                phase = await run_phase(sim, driver, name, detail, timeout=args.phase_timeout)
                phases.append(phase)
                console.print(
                    f"  {name}: {phase.converged}/{phase.devices} active in {phase.total_seconds or float('nan'):.1f} s"
                )
            cpu = cpu_seconds() - cpu_start - (await driver.call(driver.thread_cpu()) - driver_cpu_start)
            worker_cpu = process_cpu_seconds(sim.worker.pid or 0) - worker_start
            report = sim.report()
    finally:
        await driver.call(driver.close())
        driver.stop()
    return {
        "benchmark": "fleet",
        "time": datetime.now(UTC).isoformat(),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "devices": config.devices,
        "connections": config.connection_count,
        "mix": report.mix,
        "download_urls_shared_per_connection": config.share_download_urls,
        "all_connected_seconds": report.connected_s,
        "rss_mb_before_simulator": rss_before,
        "phases": [asdict(p) for p in phases],
        "cpu_seconds_simulator_during_phases": cpu,
        "cpu_seconds_worker_during_phases": worker_cpu,
        "cpu_ms_per_device_all_phases": (cpu + worker_cpu) / config.devices * 1000,
        "report": report.model_dump(mode="json"),
    }


async def run_phase(sim: FleetSimulator, driver: Driver, name: str, detail: ModelDetail, *, timeout: float) -> Phase:
    artifact = detail.version.artifact
    phase = Phase(name=name, version=detail.version.version, digest=artifact.digest, devices=len(sim.devices))
    now = datetime.now(UTC)
    states = {
        d.device_id: DesiredState(
            device_id=d.device_id,
            model=MODEL,
            version=detail.version.version,
            digest=artifact.digest,
            size_bytes=artifact.size_bytes,
            signature=artifact.signature,
            issued_at=now,
        )
        for d in sim.devices
    }
    seq = await driver.call(driver.stream_seq())
    statuses0 = sim.messages["status"]
    transfers0 = sum(d.transfers for d in sim.devices)
    urls0 = sum(c.registry_requests for c in sim.connections)
    cpu0, dcpu0 = cpu_seconds(), await driver.call(driver.thread_cpu())
    wcpu0 = process_cpu_seconds(sim.worker.pid or 0)

    revisions, put_at, start, end = await driver.call(driver.put_all(states))
    phase.write_seconds = end - start
    phase.puts_per_second = len(states) / phase.write_seconds if phase.write_seconds > 0 else 0.0
    await sim.wait_until(lambda: len(sim.converged_on(artifact.digest, revisions)) == len(states), timeout=timeout)
    done = sim.converged_on(artifact.digest, revisions)
    phase.converged = len(done)
    cpu = cpu_seconds() - cpu0 - (await driver.call(driver.thread_cpu()) - dcpu0)
    cpu += process_cpu_seconds(sim.worker.pid or 0) - wcpu0
    phase.cpu_ms_per_device = cpu / len(states) * 1000
    if done:
        per_device = sorted(d.converged_at - put_at[d.device_id] for d in done if d.converged_at is not None)
        last = max(d.converged_at for d in done if d.converged_at is not None)
        phase.total_seconds = last - start
        phase.per_device_p50_s = percentile(per_device, 50)
        phase.per_device_p95_s = percentile(per_device, 95)
        phase.per_device_max_s = per_device[-1]
        # Split each device's time: put → its change seen by the simulator's KV watcher → active.
        seen = sorted(d.changed_at - put_at[d.device_id] for d in done if d.changed_at is not None)
        install = sorted(d.converged_at - d.changed_at for d in done if d.converged_at and d.changed_at)
        phase.seen_p50_s, phase.seen_p95_s = percentile(seen, 50), percentile(seen, 95)
        phase.install_p50_s, phase.install_p95_s = percentile(install, 50), percentile(install, 95)
        phase.statuses = sim.messages["status"] - statuses0
        phase.messages_per_second = phase.statuses / phase.total_seconds
    phase.transfers = sum(d.transfers for d in sim.devices) - transfers0
    phase.download_url_requests = sum(c.registry_requests for c in sim.connections) - urls0
    steps, active, wrong = await driver.call(driver.scan_statuses(seq, revisions, artifact.digest))
    phase.stream_steps, phase.stream_active, phase.stream_wrong_revision = dict(steps), active, wrong
    return phase


def print_result(result: dict[str, Any]) -> None:
    table = Table(
        title=f"fleet: {result['devices']} devices, {result['connections']} connections",
        caption="all s: first KV put to last active; dev: each device's put to its active; seen: put to the "
        "simulator's watcher delivering it; dl: simulated transfers; stream ok: devices with an active status "
        "for their revision on SLMOPS_DEVICE",
    )
    cols = (
        "phase",
        "active",
        "write s",
        "all s",
        "dev p50",
        "dev p95",
        "dev max",
        "seen p50",
        "status/s",
        "dl",
        "URL rq",
        "stream ok",
        "CPU ms/dev",
    )
    for col in cols:
        table.add_column(col, justify="left" if col == "phase" else "right")
    for p in result["phases"]:
        table.add_row(
            p["name"],
            f"{p['converged']}/{p['devices']}",
            f"{p['write_seconds']:.1f}",
            _f(p["total_seconds"]),
            _f(p["per_device_p50_s"]),
            _f(p["per_device_p95_s"]),
            _f(p["per_device_max_s"]),
            _f(p["seen_p50_s"]),
            f"{p['messages_per_second']:.0f}",
            str(p["transfers"]),
            str(p["download_url_requests"]),
            str(p["stream_active"]),
            f"{p['cpu_ms_per_device']:.2f}",
        )
    console.print(table)
    r = result["report"]["resources"]
    console.print(
        f"all connected after {result['all_connected_seconds']:.1f} s; "
        f"RSS {r['rss_baseline_mb']:.0f} → peak {r['rss_peak_mb']:.0f} MiB = {r['rss_per_device_kb']:.1f} KiB/device "
        f"(worker {r['worker_rss_mb']:.0f} MiB); CPU over all phases "
        f"{result['cpu_ms_per_device_all_phases']:.2f} ms/device"
    )


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    raise SystemExit(main())
