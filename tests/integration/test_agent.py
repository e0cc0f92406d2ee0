"""The real edge agent against the real servers and a real model: install, verify, switch, serve,
roll back, refuse tampered bytes and bad signatures, converge after being offline or killed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from services.edge_agent.agent import Agent, AgentConfig
from services.edge_agent.capabilities import detect
from services.edge_agent.http_api import serve
from services.edge_agent.link import DeviceLink
from shared import bus, signing
from shared.artifacts import ArtifactStore
from shared.clients import RegistryClient
from shared.messages.common import config_digest
from shared.messages.device import DesiredState
from shared.messages.registry import ModelDetail
from shared.settings import Settings
from tests.conftest import service_env
from tests.integration.test_registry import register
from tests.support import device_settings, enroll, sample_files, stream_messages, unique

pytestmark = pytest.mark.usefixtures("running_registry")


async def registered(nc: Client, artifacts: ArtifactStore, tmp_path: Path, *, seed: int) -> ModelDetail:
    model, _ = sample_files(tmp_path / f"m{seed}", seed=seed)
    name = unique("dev")
    await register(nc, artifacts, model, name, "1.0")
    return await RegistryClient(nc, source="tests").get_model(name, "1.0")


async def desire(nc: Client, device_id: str, detail: ModelDetail, **overrides: object) -> int:
    v = detail.version
    state = DesiredState(
        device_id=device_id,
        model=v.name,
        version=v.version,
        digest=v.artifact.digest,
        size_bytes=v.artifact.size_bytes,
        signature=v.artifact.signature,
        issued_at=datetime.now(UTC),
    ).model_copy(update=overrides)
    kv = await nc.jetstream().key_value("desired")
    return await kv.put(device_id, state.model_dump_json().encode())


async def steps(nc: Client, device_id: str, revision: int) -> list[dict[str, object]]:
    return [
        e["data"]
        for e, _ in await stream_messages(nc, f"slmops.device.{device_id}.status", timeout=0.5)
        if e["data"]["desired_revision"] == revision
    ]


async def wait_for(
    nc: Client, device_id: str, revision: int, step: str, timeout: float = 30
) -> list[dict[str, object]]:
    for _ in range(int(timeout / 0.25)):
        seen = await steps(nc, device_id, revision)
        if any(s["step"] == step for s in seen):
            return seen
        await asyncio.sleep(0.25)
    raise AssertionError(f"{device_id} never reported {step} for revision {revision}: {[s['step'] for s in seen]}")


async def telemetry_windows(
    nc: Client, device_id: str, *, where: Callable[[dict[str, Any]], bool], timeout: float = 5.0
) -> list[dict[str, Any]]:
    """The device's telemetry windows matching `where`, waiting up to `timeout` for the first."""
    windows: list[dict[str, Any]] = []
    for _ in range(int(timeout / 0.25)):
        stored = await stream_messages(nc, f"slmops.telemetry.{device_id}", timeout=0.3)
        windows = [e["data"] for e, _ in stored if where(e["data"])]
        if windows:
            break
        await asyncio.sleep(0.25)
    return windows


@contextlib.asynccontextmanager
async def running_agent(settings: Settings, state_dir: Path, device_id: str) -> AsyncIterator[Agent]:
    identity_dir = enroll(settings, device_id)
    nc = await bus.connect(device_settings(settings, identity_dir), name=device_id)
    config = AgentConfig(
        device_id=device_id,
        device_class="rpi5",
        registry_key_pem=(identity_dir / "registry.pub").read_text(),
        state_dir=state_dir,
        telemetry_seconds=0.5,
    )
    agent = Agent(config, link=DeviceLink(nc, device_id=device_id), capabilities=detect())
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await nc.close()


async def test_install_verifies_switches_serves_and_reports(
    settings: Settings, nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    detail = await registered(nc, artifacts, tmp_path, seed=31)
    device = unique("rpi")
    async with running_agent(settings, tmp_path / "state", device) as agent:
        revision = await desire(nc, device, detail)
        seen = await wait_for(nc, device, revision, "active")
        order = [s["step"] for s in seen if s["step"] != "downloading"]
        assert order == ["received", "downloaded", "verifying", "verified", "loading", "smoke_testing", "active"]
        assert seen[-1]["active_digest"] == detail.version.artifact.digest and seen[-1]["slot"] == "a"
        assert agent.active_digest == detail.version.artifact.digest

        server = serve(agent, port=0)
        try:
            body = json.dumps({"inputs": {"input_ids": [[5, 6, 7, 8]], "attention_mask": [[1, 1, 1, 1]]}}).encode()
            url = f"http://127.0.0.1:{server.server_address[1]}/v1/infer"
            with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=10) as resp:
                reply = json.loads(resp.read())
            assert reply["digest"] == detail.version.artifact.digest and len(reply["outputs"][0][0]) == 64
        finally:
            server.shutdown()
        windows = await telemetry_windows(nc, device, where=lambda w: w["request_count"] > 0)
        assert windows and windows[0]["model_digest"] == detail.version.artifact.digest
        assert "norm" in windows[0]["outputs"] and "inputs" not in json.dumps(windows[0])
        assert windows[0]["device_class"] == "rpi5" and windows[0]["rollout_id"] is None  # desired by hand
    hellos = [e["data"] for e, _ in await stream_messages(nc, f"slmops.device.{device}.hello", timeout=0.3)]
    assert hellos[-1]["active_digest"] == detail.version.artifact.digest and hellos[-1]["device_class"] == "rpi5"


async def test_tampered_bytes_and_bad_signatures_never_become_active(
    settings: Settings, nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    good = await registered(nc, artifacts, tmp_path, seed=32)
    tampered = await registered(nc, artifacts, tmp_path, seed=33)
    other_bytes = sample_files(tmp_path / "evil", seed=99)[0].read_bytes()[: tampered.version.artifact.size_bytes]
    artifacts.put_bytes(tampered.version.artifact.key, other_bytes.ljust(tampered.version.artifact.size_bytes, b"\0"))
    forger = signing.load_or_create_private_key(tmp_path / "forger.pem")
    device = unique("rpi")
    async with running_agent(settings, tmp_path / "state", device) as agent:
        r1 = await desire(nc, device, good)
        await wait_for(nc, device, r1, "active")
        r2 = await desire(nc, device, tampered)
        failed = (await wait_for(nc, device, r2, "failed"))[-1]
        assert "sha256 mismatch" in str(failed["reason"]) and failed["active_digest"] == good.version.artifact.digest
        forged = signing.sign_digest(forger, tampered.version.artifact.digest)
        fresh = await registered(nc, artifacts, tmp_path, seed=34)
        r3 = await desire(nc, device, fresh, signature=forged)
        failed = (await wait_for(nc, device, r3, "failed"))[-1]
        assert "signature" in str(failed["reason"])
        assert agent.active_digest == good.version.artifact.digest, "the previous model keeps serving"
        assert not any(
            p.name.startswith(fresh.version.artifact.digest)
            for p in (tmp_path / "state" / device / "downloads").iterdir()
        )


async def test_rollback_to_the_previous_slot_needs_no_download(
    settings: Settings, nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    v1 = await registered(nc, artifacts, tmp_path, seed=35)
    v2 = await registered(nc, artifacts, tmp_path, seed=36)
    device = unique("rpi")
    async with running_agent(settings, tmp_path / "state", device) as agent:
        await wait_for(nc, device, await desire(nc, device, v1), "active")
        await wait_for(nc, device, await desire(nc, device, v2), "active")
        back = await desire(nc, device, v1)
        seen = await wait_for(nc, device, back, "active")
        assert [s["step"] for s in seen] == ["active"], "rolling back is a slot switch, not an install"
        assert seen[-1]["slot"] == "a" and agent.active_digest == v1.version.artifact.digest


async def test_settings_arrive_with_the_model_and_change_alone_without_a_download(
    settings: Settings, nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    v1 = await registered(nc, artifacts, tmp_path, seed=40)
    device = unique("rpi")
    first, then = {"lang": "de", "thresholds": {"match": 0.8}}, {"lang": "fr"}
    async with running_agent(settings, tmp_path / "state", device) as agent:
        installed = await wait_for(nc, device, await desire(nc, device, v1, config=first), "active")
        assert installed[-1]["config_digest"] == config_digest(first)
        server = serve(agent, port=0)
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/v1/config"
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert json.loads(resp.read()) == first and resp.headers["ETag"] == f'"{config_digest(first)}"'
            changed = await wait_for(nc, device, await desire(nc, device, v1, config=then), "active")
            assert [s["step"] for s in changed] == ["active"], "new settings alone: no download, no install"
            assert changed[-1]["config_digest"] == config_digest(then)
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert json.loads(resp.read()) == then
        finally:
            server.shutdown()
        assert json.loads((tmp_path / "state" / device / "slots" / "a" / "config.json").read_text()) == then


async def test_an_offline_device_converges_when_it_returns(
    settings: Settings, nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    v1 = await registered(nc, artifacts, tmp_path, seed=37)
    device = unique("gw")
    revision = await desire(nc, device, v1)  # written while no agent runs
    await asyncio.sleep(0.5)
    assert await steps(nc, device, revision) == []
    async with running_agent(settings, tmp_path / "state", device):
        await wait_for(nc, device, revision, "active")


async def test_killed_mid_install_keeps_serving_the_previous_model_and_resumes(
    settings: Settings, nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    v1 = await registered(nc, artifacts, tmp_path, seed=38)
    v2 = await registered(nc, artifacts, tmp_path, seed=39)
    device = unique("rpi")
    state_dir = tmp_path / "state"
    identity_dir = enroll(settings, device)

    def start(*extra: str) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable,
            "-m",
            "shared.cli.main",
            "agent",
            "--identity",
            str(identity_dir),
            "--state-dir",
            str(state_dir),
            "--http-port",
            "-1",
            *extra,
        ]
        return subprocess.Popen(cmd, env=service_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    proc = start()
    try:
        await wait_for(nc, device, await desire(nc, device, v1), "active")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    slow = start("--rate-limit", "40000")  # ~7 s for this model: time to kill it half-way
    r2 = await desire(nc, device, v2)
    for _ in range(80):
        progress = [s for s in await steps(nc, device, r2) if s["step"] == "downloading" and s["progress"]["done"] > 0]
        if progress:
            break
        await asyncio.sleep(0.1)
    assert progress, "the download never started"
    slow.kill()  # SIGKILL: no chance to clean up
    slow.wait(timeout=10)
    local = json.loads((state_dir / device / "state.json").read_text())
    assert local["slots"][local["active"]]["digest"] == v1.version.artifact.digest, "previous model still active"
    partial = state_dir / device / "downloads" / f"{v2.version.artifact.digest}.part"
    kept = partial.stat().st_size
    assert 0 < kept < v2.version.artifact.size_bytes

    proc = start()
    try:
        seen = await wait_for(nc, device, r2, "active")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    resumed = [s for s in seen if s["step"] == "downloading"]
    assert any(s["progress"]["done"] >= kept for s in resumed), "the restart resumed the partial download"
    assert seen[-1]["active_digest"] == v2.version.artifact.digest
    assert not partial.exists()


async def test_shadow_mode_reports_agreement_with_the_previous_model(
    settings: Settings, nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    import numpy as np

    v1 = await registered(nc, artifacts, tmp_path, seed=40)
    v2 = await registered(nc, artifacts, tmp_path, seed=41)
    device = unique("jet")
    async with running_agent(settings, tmp_path / "state", device) as agent:
        await wait_for(nc, device, await desire(nc, device, v1), "active")
        await wait_for(nc, device, await desire(nc, device, v2, shadow=True), "active")
        inputs = {"input_ids": np.array([[3, 4, 5, 6]], dtype=np.int64), "attention_mask": np.ones((1, 4), np.int64)}
        for _ in range(5):
            digest, _ = agent.infer(inputs)
        assert digest == v2.version.artifact.digest
        shadowed = await telemetry_windows(nc, device, where=lambda w: bool(w["shadow"]))
    assert shadowed, "no telemetry window carried shadow agreement"
    shadow = shadowed[0]["shadow"]
    assert shadow["previous_digest"] == v1.version.artifact.digest and shadow["compared"] == 5
    assert 0.0 <= shadow["agreement_rate"] <= 1.0


async def test_the_smoke_input_named_in_the_desired_state_is_fetched_verified_and_run(
    settings: Settings, nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    from shared.messages.device import SmokeInput

    model, eval_set = sample_files(tmp_path / "m", seed=42)
    name = unique("smk")
    await register(nc, artifacts, model, name, "1.0", eval_set=eval_set)
    detail = await RegistryClient(nc, source="tests").get_model(name, "1.0")
    assert detail.version.eval_set is not None
    smoke = SmokeInput(digest=detail.version.eval_set.digest, size_bytes=detail.version.eval_set.size_bytes)
    device = unique("rpi")
    async with running_agent(settings, tmp_path / "state", device) as agent:
        revision = await desire(nc, device, detail, smoke_input=smoke)
        await wait_for(nc, device, revision, "active")
        assert agent.active_digest == detail.version.artifact.digest
    assert (tmp_path / "state" / device / "downloads" / f"{smoke.digest}.npz").exists()


async def test_the_agent_process_continues_the_desired_states_trace_in_the_span_file(
    settings: Settings, nc: Client, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """`slmops agent` installs its tracer provider: the install's span lands in <home>/traces.jsonl,
    a child of the span the traceparent names, where `slmops trace` finds it by the rollout id."""
    from shared.trace_tree import read_rollout_spans, rollout_traces

    detail = await registered(nc, artifacts, tmp_path, seed=43)
    device, rollout = unique("rpi"), unique("r")
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    identity_dir = enroll(settings, device)
    cmd = [sys.executable, "-m", "shared.cli.main", "agent", "--identity", str(identity_dir)]
    cmd += ["--state-dir", str(tmp_path / "state"), "--http-port", "-1"]
    proc = subprocess.Popen(cmd, env=service_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        revision = await desire(
            nc, device, detail, rollout_id=rollout, wave=0, traceparent=f"00-{trace_id}-{parent_id}-01"
        )
        await wait_for(nc, device, revision, "active")
    finally:
        proc.send_signal(signal.SIGTERM)  # the agent exports what it still holds as it stops
        proc.wait(timeout=20)
    (tree,) = rollout_traces(read_rollout_spans(settings.traces_file, rollout).spans, rollout)
    (install,) = tree.roots  # an orphan: the rollout's own span is not in the file
    assert (tree.trace_id, install.span.parent_id, install.span.name) == (trace_id, parent_id, "device.install")
    assert install.span.service == "slmops-agent" and install.span.attributes["slmops.device_id"] == device
    assert install.span.attributes["slmops.outcome"] == "active" and install.span.status == "OK"
    steps = [c.span for c in install.children]
    assert [s.name for s in steps if s.service == "slmops-agent"] == [
        "device.download",
        "device.verify",
        "device.load",
        "device.smoke_test",
        "device.switch",
    ]
    # The URL request carries the install's context (shared.bus), so the registry's answer is in it too.
    assert any(s.service == "slmops-registry" and "download_url" in s.name for s in steps)
