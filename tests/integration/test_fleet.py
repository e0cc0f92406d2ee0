"""The fleet simulator against the real servers: a mixed, faulty fleet installs, upgrades, rolls back.

One scenario runs once for the module (about 25 s) and each test checks one property of it, from the
simulator's state or from what actually landed on the streams:

1. 150 devices (rpi5/jetson/gateway 60/30/10) with faults: offline, slow, download_fail, flaky,
   corrupt, crash; the offline ones drop off before anything is written.
2. desired = v1 for every device; wait until all but the corrupt and download_fail devices are active.
3. desired = v2 in shadow mode for every device, as wave 0 of a rollout; same wait; telemetry keeps flowing.
4. desired = v1 again (by hand): a rollback to the other slot.

A second, smaller run shifts the inputs of half its devices and checks that their similarity to the
reference falls (`test_shifted_inputs_lower_the_similarity_of_the_shifted_devices`).
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nats.aio.client import Client
from typer.testing import CliRunner

from services.edge_agent.cli import fleet_app
from services.edge_agent.fleet.config import SimulationConfig
from services.edge_agent.fleet.faults import Fault, parse_faults
from services.edge_agent.fleet.report import FleetReport
from services.edge_agent.fleet.simulator import FleetSimulator
from services.edge_agent.telemetry import REFERENCE_REQUESTS
from shared import bus
from shared.artifacts import ArtifactStore
from shared.clients import RegistryClient
from shared.messages.device import DeviceStatus, TelemetryWindow
from shared.messages.envelope import decode
from shared.messages.registry import ModelDetail
from shared.settings import Settings
from tests.conftest import ServiceRunner, service_env
from tests.integration.test_registry import register
from tests.support import as_simulator, assign, sample_files, stream_messages, unique

pytestmark = pytest.mark.usefixtures("running_registry")

DEVICES = 150
FAULTS = "offline=8,slow=6,download_fail=4,flaky=6,corrupt=4,crash=6"
NEVER_ACTIVE = {Fault.CORRUPT, Fault.DOWNLOAD_FAIL}


@dataclass
class Phase:
    digest: str
    revisions: dict[str, int]
    written_at: datetime
    converged: set[str] = field(default_factory=set)
    transfers: dict[str, int] = field(default_factory=dict)


@dataclass
class Scenario:
    prefix: str
    v1: str
    v2: str
    faults: dict[str, Fault | None]
    classes: dict[str, str]
    rollout_id: str
    real_inference: set[str]
    phases: dict[str, Phase]
    report: FleetReport


@pytest.fixture(scope="module")
def scenario(
    settings: Settings, registry: ServiceRunner, artifacts: ArtifactStore, tmp_path_factory: pytest.TempPathFactory
) -> Scenario:
    if registry.process is None or registry.process.poll() is not None:
        registry.start()  # what running_registry does; a module fixture cannot use a function fixture
    return asyncio.run(_run_scenario(settings, artifacts, tmp_path_factory.mktemp("fleet")))


async def _run_scenario(settings: Settings, artifacts: ArtifactStore, tmp: Path) -> Scenario:
    nc = await bus.connect(settings, name="fleet-test")
    try:
        name = unique("fleet")
        details = []
        for version, seed in (("1.0", 0), ("2.0", 4417)):  # 4417: no other test asserts on its blob
            model, _ = sample_files(tmp / version, seed=seed)
            assert (await register(nc, artifacts, model, name, version)).status == "applied"
            details.append(await RegistryClient(nc, source="tests").get_model(name, version))
        v1, v2 = details
        rollout_id = unique("r")
        config = SimulationConfig(
            devices=DEVICES,
            mix={"rpi5": 60, "jetson": 30, "gateway": 10},
            faults=parse_faults(FAULTS),
            real_inference=12,
            id_prefix=unique("sim"),
            heartbeat_seconds=2.0,
            window_seconds=1.5,
            request_rate=5.0,
            measure_requests=100,
            download_backoff=0.2,
            offline_after=0.5,
            offline_for=5.0,
            crash_restart=1.0,
        )
        async with FleetSimulator(as_simulator(settings), config) as sim:
            ids = [d.device_id for d in sim.devices]
            expected = sum(1 for d in sim.devices if d.fault not in NEVER_ACTIVE)
            assert await sim.wait_until(lambda: sim.events["went_offline"] == 8, timeout=10)

            async def change(detail: ModelDetail, *, shadow: bool, rollout: str | None = None) -> Phase:
                art = detail.version.artifact
                phase = Phase(digest=art.digest, revisions={}, written_at=datetime.now(UTC))
                phase.transfers = {d.device_id: d.transfers for d in sim.devices}
                phase.revisions = await assign(nc, ids, detail, rollout_id=rollout, shadow=shadow)
                settled = await sim.wait_until(
                    lambda: (
                        len(sim.converged_on(art.digest, phase.revisions)) == expected
                        and all(sim.state_of(d) == "failed" for d in sim.devices if d.fault in NEVER_ACTIVE)
                    ),
                    timeout=30,
                )
                assert settled, f"not converged: { {sim.state_of(d) for d in sim.devices} }"
                phase.converged = {d.device_id for d in sim.converged_on(art.digest, phase.revisions)}
                phase.transfers = {d.device_id: d.transfers - phase.transfers[d.device_id] for d in sim.devices}
                return phase

            install = await change(v1, shadow=False)  # includes the offline devices' return
            upgrade = await change(v2, shadow=True, rollout=rollout_id)
            await asyncio.sleep(3.0)  # shadow-mode telemetry on v2
            rollback = await change(v1, shadow=False)
            return Scenario(
                prefix=config.id_prefix,
                v1=v1.version.artifact.digest,
                v2=v2.version.artifact.digest,
                faults={d.device_id: d.fault for d in sim.devices},
                classes={d.device_id: d.device_class.name for d in sim.devices},
                rollout_id=rollout_id,
                real_inference={d.device_id for d in sim.devices if d.real_inference},
                phases={"install": install, "upgrade": upgrade, "rollback": rollback},
                report=sim.report(),
            )
    finally:
        await nc.close()


async def statuses(nc: Client, scenario: Scenario) -> dict[str, list[DeviceStatus]]:
    """Every status of the scenario's devices on the SLMOPS_DEVICE stream, validated, in order."""
    out: dict[str, list[DeviceStatus]] = defaultdict(list)
    for body, headers in await stream_messages(nc, "slmops.device.*.status"):
        if not body["data"]["device_id"].startswith(scenario.prefix + "-"):
            continue
        envelope = decode(json.dumps(body).encode(), expected=(DeviceStatus,))
        assert headers["Nats-Msg-Id"] == envelope.id
        out[envelope.data.device_id].append(envelope.data)
    return out


def of_fault(scenario: Scenario, *faults: Fault | None) -> set[str]:
    return {d for d, f in scenario.faults.items() if f in faults}


def test_the_fleet_converges_on_the_desired_model(scenario: Scenario) -> None:
    report = scenario.report
    assert report.mix == {"rpi5": 90, "jetson": 45, "gateway": 15}
    assert report.faults == {"offline": 8, "slow": 6, "download_fail": 4, "flaky": 6, "corrupt": 4, "crash": 6}
    healthy_or_recovering = set(scenario.faults) - of_fault(scenario, *NEVER_ACTIVE)
    for phase in scenario.phases.values():
        assert phase.converged == healthy_or_recovering
    assert report.states == {"active": DEVICES - 8, "failed": 8}
    assert report.shared.real_downloads == 2  # once per digest, not once per device
    assert report.messages["publish_lost"] == 0 and report.events.get("simulator_errors", 0) == 0


async def test_statuses_on_the_stream_carry_the_kv_revision(scenario: Scenario, nc: Client) -> None:
    by_device = await statuses(nc, scenario)
    assert set(by_device) == set(scenario.faults)
    revisions = {p.revisions[d]: (name, p.digest) for name, p in scenario.phases.items() for d in p.revisions}
    for device_id, reported in by_device.items():
        for status in reported:
            assert status.desired_revision in revisions, f"{device_id} reported an unknown revision"
            assert status.digest == revisions[status.desired_revision][1]
        for name, phase in scenario.phases.items():
            if device_id in phase.converged:
                assert any(s.step == "active" and s.desired_revision == phase.revisions[device_id] for s in reported), (
                    f"{device_id} has no active status for {name}"
                )


async def test_corrupted_copies_fail_verification_and_never_become_active(scenario: Scenario, nc: Client) -> None:
    by_device = await statuses(nc, scenario)
    corrupt = of_fault(scenario, Fault.CORRUPT)
    assert scenario.report.shared.corrupted_copies_verified >= len(corrupt) * 2
    for device_id in corrupt:
        steps = [s.step for s in by_device[device_id]]
        assert "active" not in steps and "verified" not in steps
        failures = [s for s in by_device[device_id] if s.step == "failed"]
        assert failures and all("sha256 mismatch" in (s.reason or "") for s in failures)
        assert all(s.active_digest is None for s in by_device[device_id])


async def test_failed_downloads_are_retried_a_bounded_number_of_times(scenario: Scenario, nc: Client) -> None:
    by_device = await statuses(nc, scenario)
    revision = scenario.phases["install"].revisions
    for device_id in of_fault(scenario, Fault.DOWNLOAD_FAIL):
        mine = [s for s in by_device[device_id] if s.desired_revision == revision[device_id]]
        starts = [s.attempt for s in mine if s.step == "downloading" and s.progress and s.progress.done == 0]
        assert starts == [1, 2, 3]
        assert mine[-1].step == "failed" and "after 3 attempts" in (mine[-1].reason or "")
    for device_id in of_fault(scenario, Fault.FLAKY):
        mine = [s for s in by_device[device_id] if s.desired_revision == revision[device_id]]
        assert mine[-1].step == "active" and mine[-1].attempt == 2


async def test_offline_devices_miss_the_change_and_converge_when_they_return(scenario: Scenario, nc: Client) -> None:
    assert scenario.report.events["desired_missed_while_away"] >= 8
    assert scenario.report.events["came_back"] == 8
    by_device = await statuses(nc, scenario)
    install = scenario.phases["install"]
    for device_id in of_fault(scenario, Fault.OFFLINE):
        mine = [s for s in by_device[device_id] if s.desired_revision == install.revisions[device_id]]
        assert mine[0].step == "received" and mine[-1].step == "active"
        assert device_id in install.converged


async def test_crashed_devices_restart_and_converge_with_the_previous_model_kept(
    scenario: Scenario, nc: Client
) -> None:
    events = scenario.report.events
    assert events["crashed"] == events["restarted"] == 6
    by_device = await statuses(nc, scenario)
    upgrade = scenario.phases["upgrade"]
    for device_id in of_fault(scenario, Fault.CRASH):
        assert device_id in upgrade.converged
        # Until v2 is active, every status of the upgrade says v1 is still serving (or nothing yet).
        mine = [s for s in by_device[device_id] if s.desired_revision == upgrade.revisions[device_id]]
        assert all(s.active_digest in (scenario.v1, None) for s in mine if s.step != "active")


async def test_rollback_to_the_previous_digest_needs_no_download(scenario: Scenario, nc: Client) -> None:
    rollback = scenario.phases["rollback"]
    switched = rollback.converged
    assert switched and all(rollback.transfers[d] == 0 for d in switched)
    by_device = await statuses(nc, scenario)
    for device_id in switched:
        mine = [s for s in by_device[device_id] if s.desired_revision == rollback.revisions[device_id]]
        assert [s.step for s in mine] == ["active"] and mine[0].active_digest == scenario.v1


async def test_telemetry_windows_arrive_and_validate(scenario: Scenario, nc: Client) -> None:
    windows: list[TelemetryWindow] = []
    for body, _ in await stream_messages(nc, "slmops.telemetry.*"):
        if body["data"]["device_id"].startswith(scenario.prefix + "-"):
            windows.append(decode(json.dumps(body).encode(), expected=(TelemetryWindow,)).data)
    devices = {w.device_id for w in windows}
    assert devices & scenario.real_inference and devices - scenario.real_inference  # real and drawn
    assert {w.model_digest for w in windows} <= {scenario.v1, scenario.v2}
    served = [w for w in windows if w.request_count and w.error_count < w.request_count]
    assert served and all(abs(w.outputs["norm"].mean - 1.0) < 1e-4 for w in served)  # L2-normalised model
    assert all(w.device_class == scenario.classes[w.device_id] for w in windows)
    on_v2 = [w for w in windows if w.model_digest == scenario.v2]
    unlabelled = [w for w in on_v2 if (w.rollout_id, w.wave) != (scenario.rollout_id, 0)]
    assert on_v2 and not unlabelled, [(w.device_id, w.window_start, w.window_end, w.rollout_id) for w in unlabelled]
    labelled = [w for w in windows if w.model_digest == scenario.v1 and (w.rollout_id, w.wave) != (None, None)]
    assert not labelled, [(w.device_id, w.window_start, w.window_end, w.rollout_id) for w in labelled]  # by hand
    assert all(w.similarity is None or w.similarity.reference_requests == REFERENCE_REQUESTS for w in windows)
    shadowed = [w.shadow for w in windows if w.shadow is not None]
    assert shadowed and all(s.previous_digest == scenario.v1 for s in shadowed)
    assert all(0.0 <= s.agreement_rate <= 1.0 for s in shadowed)


def test_cli_simulate_prints_a_json_report(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in service_env(settings).items():
        if key.startswith("SLMOPS_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("SLMOPS_NATS_CREDS")  # the CLI picks the simulator's own credentials
    result = CliRunner().invoke(
        fleet_app, ["simulate", "--devices", "30", "--duration", "2", "--id-prefix", unique("cli"), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = FleetReport.model_validate_json(result.stdout)
    assert report.devices == 30 and report.messages["hello"] >= 30
    assert report.mix == {"rpi5": 18, "jetson": 9, "gateway": 3}


async def test_shifted_inputs_lower_the_similarity_of_the_shifted_devices(
    settings: Settings, nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """Half the devices' inputs shift 5 s in: their windows come from real inference on token ids of a
    narrow band of the vocabulary, and their similarity to the reference falls; the others' does not."""
    name = unique("shift")
    model, _ = sample_files(tmp_path / "m", seed=4418)
    assert (await register(nc, artifacts, model, name, "1.0")).status == "applied"
    detail = await RegistryClient(nc, source="tests").get_model(name, "1.0")
    art = detail.version.artifact
    config = SimulationConfig(
        devices=12,
        mix={"jetson": 1},
        real_inference=2,
        id_prefix=unique("shifted"),
        window_seconds=1.0,
        request_rate=100.0,
        measure_requests=100,
        input_shift_after=5.0,
        input_shift_share=0.5,
    )
    async with FleetSimulator(as_simulator(settings), config) as sim:
        shifts_at = datetime.now(UTC) + timedelta(seconds=config.input_shift_after or 0)
        shifting = {d.device_id for d in sim.devices if d.inputs_shift}
        assert len(shifting) == 6
        revisions = await assign(nc, [d.device_id for d in sim.devices], detail)
        assert await sim.wait_until(lambda: len(sim.converged_on(art.digest, revisions)) == 12, timeout=15)
        assert datetime.now(UTC) < shifts_at - timedelta(seconds=2), "references must be built before the shift"
        await asyncio.sleep((shifts_at - datetime.now(UTC)).total_seconds() + 4.0)
        assert sim.report().events["windows_on_shifted_inputs"] > 0
    after: dict[bool, list[int]] = {True: [0] * 13, False: [0] * 13}
    for body, _ in await stream_messages(nc, "slmops.telemetry.*"):
        if not body["data"]["device_id"].startswith(config.id_prefix + "-"):
            continue
        window = decode(json.dumps(body).encode(), expected=(TelemetryWindow,)).data
        if window.similarity is not None and window.window_start > shifts_at + timedelta(seconds=0.5):
            group = after[window.device_id in shifting]
            for i, n in enumerate(window.similarity.counts):
                group[i] += n
    assert sum(after[True]) > 500 and sum(after[False]) > 500

    def mean_bin(counts: list[int]) -> float:
        return sum(i * n for i, n in enumerate(counts)) / sum(counts)

    assert mean_bin(after[True]) < mean_bin(after[False]) - 0.1
