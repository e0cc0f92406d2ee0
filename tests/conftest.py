"""Fixtures: a real nats-server (authentication on) and a real S3 server (SeaweedFS) on free loopback ports,
once per session, and the registry as a real subprocess (`slmops service run registry`) talking to them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from shared import bus
from shared.artifacts import ArtifactStore
from shared.auth import bootstrap
from shared.auth.authority import Authority
from shared.discovery import service_names
from shared.settings import Settings
from shared.stack.servers import ServerProcess, free_port, start_nats, start_s3, stop_process
from shared.stack.supervisor import init_platform, service_health


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' SLMOPS_HOME; its `auth/` holds the test deployment's keys and credentials."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="session")
def authority(home: Path) -> Authority:
    """The test deployment's trust root, with credentials for admin, operator, simulator and every
    installed service: authentication is on in the tests as everywhere."""
    return bootstrap.prepare(home / "auth", service_names())


@pytest.fixture(scope="session")
def servers(
    tmp_path_factory: pytest.TempPathFactory, authority: Authority
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    root = tmp_path_factory.mktemp("servers")
    nats = start_nats(
        port=free_port(),
        store_dir=root / "nats",
        log_dir=root / "logs",
        config=authority.directory / "nats-auth.conf",
    )
    s3 = start_s3(port=free_port(), log_dir=root / "logs")
    yield nats, s3
    s3.stop()
    nats.stop()


@pytest.fixture(scope="session")
def settings(servers: tuple[ServerProcess, ServerProcess], home: Path, authority: Authority) -> Settings:
    """The tests' own connection is the admin's (set-up and inspection); services, devices and
    the operator connect with their own credentials (`ServiceRunner`, tests/integration/test_permissions.py)."""
    nats, s3 = servers
    s = Settings(
        home=home,
        nats_url=nats.url,
        nats_creds=authority.creds_path("admin", bootstrap.ADMIN),
        s3_endpoint=s3.url,
        s3_bucket="slmops-test",
        ack_wait_seconds=3.0,
        max_deliver=3,
        otel_exporter="file",
    )
    asyncio.run(init_platform(s))
    return s


def service_env(settings: Settings) -> dict[str, str]:
    """The environment that points a subprocess at the test servers."""
    return os.environ | {
        "SLMOPS_HOME": str(settings.home),
        "SLMOPS_NATS_URL": settings.nats_url,
        "SLMOPS_NATS_CREDS": str(settings.credentials_file),
        "SLMOPS_S3_ENDPOINT": settings.s3_endpoint,
        "SLMOPS_S3_BUCKET": settings.s3_bucket,
        "SLMOPS_ACK_WAIT_SECONDS": str(settings.ack_wait_seconds),
        "SLMOPS_MAX_DELIVER": str(settings.max_deliver),
        "SLMOPS_OTEL_EXPORTER": settings.otel_exporter,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export spans within 0.1 s so tests can read them
    }


class ServiceRunner:
    """A service subprocess the tests can kill and restart."""

    def __init__(self, name: str, settings: Settings, *, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.settings = settings
        self.env = env or {}
        self.log_path = Path(settings.home) / f"{name}-test.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        creds = {"SLMOPS_NATS_CREDS": str(self.settings.auth_dir / "creds" / f"service-{self.name}.creds")}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "shared.cli.main", "service", "run", self.name],
                env=service_env(self.settings) | creds | self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-3000:]}")
            if asyncio.run(service_health(self.settings, [self.name], timeout=0.5))[self.name]:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not healthy after {timeout}s: {self.log_path.read_text()[-3000:]}")

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=20.0)


@pytest.fixture(scope="session")
def registry(settings: Settings) -> Iterator[ServiceRunner]:
    # "other-team" is the bucket another system exports to (tests/integration/test_plain_client.py).
    runner = ServiceRunner("registry", settings, env={"SLMOPS_REGISTRY_ALLOWED_BUCKETS": "other-team"})
    runner.start()
    yield runner
    runner.stop()


@pytest.fixture
def running_registry(registry: ServiceRunner) -> ServiceRunner:
    """The session's registry, restarted first if an earlier test killed it."""
    if registry.process is None or registry.process.poll() is not None:
        registry.start()
    return registry


@pytest.fixture(scope="session")
def optimizer(settings: Settings, registry: ServiceRunner) -> Iterator[ServiceRunner]:
    runner = ServiceRunner("optimizer", settings)
    runner.start()
    yield runner
    runner.stop()


@pytest.fixture
def running_optimizer(optimizer: ServiceRunner, running_registry: ServiceRunner) -> ServiceRunner:
    if optimizer.process is None or optimizer.process.poll() is not None:
        optimizer.start()
    return optimizer


@pytest.fixture(scope="session")
def intake(settings: Settings) -> Iterator[ServiceRunner]:
    """The intake as its own process, sweeping often so orphaned commands reach the DLQ quickly."""
    runner = ServiceRunner("intake", settings, env={"SLMOPS_INTAKE_SWEEP_SECONDS": "0.5"})
    runner.start()
    yield runner
    runner.stop()


@pytest.fixture
def running_intake(intake: ServiceRunner) -> ServiceRunner:
    if intake.process is None or intake.process.poll() is not None:
        intake.start()
    return intake


# Telemetry timings short enough for a test (drift: tests/integration/test_telemetry_fleet.py;
# rollups: tests/integration/test_telemetry.py): drift periods and rollups of one bucket.
TELEMETRY_BUCKET_SECONDS = 5
TELEMETRY_PERIOD_SECONDS = 5
TELEMETRY_REFERENCE_PERIODS = 2
TELEMETRY_DEBOUNCE = 2
TELEMETRY_MIN_REQUESTS = 500
TELEMETRY_GRACE_SECONDS = 2
TELEMETRY_ROLLUP_SECONDS = 5
# Longer than any test's data lives, short enough that what every tick scans (and drift scoring
# redoes each period, for every digest the view holds) stays the last few tests' and not the session's.
TELEMETRY_RETENTION_SECONDS = 300


def telemetry_env() -> dict[str, str]:
    """A telemetry instance for tests: its own /metrics port, quick ticks and snapshots, the timings
    above. Further instances may run beside it with the same timings: they share its durable and
    fold log (and so its bucket width)."""
    return {
        "SLMOPS_TELEMETRY_METRICS_PORT": str(free_port()),
        "SLMOPS_TELEMETRY_TICK_SECONDS": "0.2",
        "SLMOPS_TELEMETRY_SNAPSHOT_SECONDS": "0.5",
        "SLMOPS_TELEMETRY_BUCKET_SECONDS": str(TELEMETRY_BUCKET_SECONDS),
        "SLMOPS_TELEMETRY_DRIFT_PERIOD_SECONDS": str(TELEMETRY_PERIOD_SECONDS),
        "SLMOPS_TELEMETRY_DRIFT_REFERENCE_PERIODS": str(TELEMETRY_REFERENCE_PERIODS),
        "SLMOPS_TELEMETRY_DRIFT_DEBOUNCE": str(TELEMETRY_DEBOUNCE),
        "SLMOPS_TELEMETRY_DRIFT_MIN_REQUESTS": str(TELEMETRY_MIN_REQUESTS),
        "SLMOPS_TELEMETRY_ROLLUP_GRACE_SECONDS": str(TELEMETRY_GRACE_SECONDS),
        "SLMOPS_TELEMETRY_ROLLUP_SECONDS": str(TELEMETRY_ROLLUP_SECONDS),
        "SLMOPS_TELEMETRY_RETENTION_SECONDS": str(TELEMETRY_RETENTION_SECONDS),
    }


@pytest.fixture(scope="session")
def telemetry(settings: Settings) -> Iterator[ServiceRunner]:
    runner = ServiceRunner("telemetry", settings, env=telemetry_env())
    runner.start()
    yield runner
    runner.stop()


@pytest.fixture
def running_telemetry(telemetry: ServiceRunner) -> ServiceRunner:
    if telemetry.process is None or telemetry.process.poll() is not None:
        telemetry.start()
    return telemetry


@pytest.fixture(scope="session")
def rollout(settings: Settings) -> Iterator[ServiceRunner]:
    runner = ServiceRunner("rollout", settings, env={"SLMOPS_ROLLOUT_TICK_SECONDS": "0.2"})
    runner.start()
    yield runner
    runner.stop()


@pytest.fixture
def running_rollout(rollout: ServiceRunner) -> ServiceRunner:
    if rollout.process is None or rollout.process.poll() is not None:
        rollout.start()
    return rollout


@pytest.fixture(scope="session")
def blueprints(settings: Settings) -> Iterator[ServiceRunner]:
    runner = ServiceRunner("blueprints", settings, env={"SLMOPS_BLUEPRINTS_TICK_SECONDS": "0.5"})
    runner.start()
    yield runner
    runner.stop()


@pytest.fixture
def running_blueprints(blueprints: ServiceRunner) -> ServiceRunner:
    if blueprints.process is None or blueprints.process.poll() is not None:
        blueprints.start()
    return blueprints


@pytest.fixture
async def nc(settings: Settings) -> AsyncIterator[Client]:
    client = await bus.connect(settings, name="tests")
    yield client
    await client.close()


@pytest.fixture(scope="session")
def artifacts(settings: Settings) -> ArtifactStore:
    return ArtifactStore.from_settings(settings)
