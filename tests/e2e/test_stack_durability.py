"""The embedded stack keeps what it holds and comes back from what kills it, driven as a user would.

One stack for the module (starting one costs ~15 s on two cores); each test sets up what it checks.
- `slmops down` then `slmops up` keeps models, variants, aliases, events, the DLQ and the blobs.
- kill -9 of nats-server and S3: `slmops status` says so, and the supervisor brings them back.
- `slmops doctor` finds a record whose blob is gone, and its printed repair works.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import topology
from shared.artifacts import ArtifactStore
from shared.settings import STACK_FILE, Settings
from tests.e2e.test_cli_stack import slmops


@pytest.fixture(scope="module")
def stack_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("durable") / ".slmops"
    slmops(home, "up", "--detach", "--nats-port", "0", "--s3-port", "0")
    yield home
    slmops(home, "down", check=False)


@pytest.fixture(scope="module")
def sample(stack_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    slmops(stack_home, "model", "sample", str(out))
    return out


def _stack(home: Path) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((home / STACK_FILE).read_text())
    return info


def _settings(home: Path) -> Settings:
    """The running stack's addresses, with the admin's credentials where authentication is on."""
    info = _stack(home)
    extra: dict[str, Any] = {}
    admin = home / "auth" / "creds" / "admin-platform.creds"
    if admin.exists():
        extra["nats_creds"] = admin
    return Settings(home=home, nats_url=info["nats_url"], s3_endpoint=info["s3_endpoint"], **extra)


async def _streams(settings: Settings) -> dict[str, tuple[int, int]]:
    """(messages, last sequence) of the events stream and the DLQ."""
    from shared import bus

    nc = await bus.connect(settings, name="test-durability")
    try:
        js = nc.jetstream()
        out = {}
        for name in (topology.EVENTS_STREAM, topology.DLQ_STREAM):
            state = (await js.stream_info(name)).state
            out[name] = (state.messages, state.last_seq)
        return out
    finally:
        await nc.close()


async def _publish_junk_command(settings: Settings) -> None:
    from shared import bus

    nc = await bus.connect(settings, name="test-durability")
    try:
        await nc.jetstream().publish("slmops.cmd.model.register", b"this is not a command")
    finally:
        await nc.close()


def _until(predicate: Any, what: str, attempts: int = 240) -> None:
    """Poll `predicate` (a bounded number of times) until it holds; fail naming `what`."""
    for _ in range(attempts):
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"never happened: {what}")


def test_down_then_up_keeps_models_variants_aliases_events_dlq_and_blobs(
    stack_home: Path, sample: Path, tmp_path: Path
) -> None:
    model, eval_set = sample / "tiny-embedder.onnx", sample / "tiny-embedder-eval.npz"
    slmops(stack_home, "model", "push", str(model), "-n", "keep", "-v", "1.0.0", "--eval-set", str(eval_set))
    slmops(stack_home, "model", "alias", "keep", "stable", "1.0.0")
    slmops(stack_home, "optimize", "keep", "1.0.0", "--profile", "jetson")

    def variants() -> list[str]:
        shown = json.loads(slmops(stack_home, "model", "show", "keep", "1.0.0", "--json").stdout)
        return [v["variant"] for v in shown["variants"]]

    _until(lambda: bool(variants()), "the optimizer registers a variant")
    settings = _settings(stack_home)
    dlq_before = asyncio.run(_streams(settings))[topology.DLQ_STREAM][0]
    asyncio.run(_publish_junk_command(settings))
    _until(lambda: asyncio.run(_streams(settings))[topology.DLQ_STREAM][0] > dlq_before, "the junk is dead-lettered")
    before = asyncio.run(_streams(settings))
    shown_before = json.loads(slmops(stack_home, "model", "show", "keep", "1.0.0", "--json").stdout)

    slmops(stack_home, "down")
    slmops(stack_home, "up", "--detach", "--nats-port", "0", "--s3-port", "0")

    settings = _settings(stack_home)
    assert asyncio.run(_streams(settings)) == before
    shown = json.loads(slmops(stack_home, "model", "show", "keep", "stable", "--json").stdout)
    assert shown == shown_before
    assert [v["variant"] for v in shown["variants"]] == variants() != []
    assert shown["aliases"] == ["stable"]
    store = ArtifactStore.from_settings(settings)
    for artifact in (shown["version"]["artifact"], shown["version"]["eval_set"], shown["variants"][0]["artifact"]):
        got = store.download(artifact["key"], tmp_path / "blob")
        assert (got.digest, got.size_bytes) == (artifact["digest"], artifact["size_bytes"])
    assert slmops(stack_home, "doctor").returncode == 0


def test_killed_servers_show_as_down_and_the_supervisor_restarts_them(stack_home: Path) -> None:
    info = _stack(stack_home)
    supervisor = int(info["supervisor_pid"])
    nats_pid, s3_pid = info["servers"]["nats"]["pid"], info["servers"]["s3"]["pid"]
    restarts = {n: info["servers"][n]["restarts"] for n in ("nats", "s3")}
    os.kill(supervisor, signal.SIGSTOP)  # so the status below sees the dead servers before any restart
    try:
        os.kill(nats_pid, signal.SIGKILL)
        os.kill(s3_pid, signal.SIGKILL)
        status = slmops(stack_home, "status", "--json", check=False)
        healthy = {c["name"]: c["healthy"] for c in json.loads(status.stdout)["components"]}
        assert status.returncode == 1
        assert healthy["nats"] is False and healthy["s3"] is False
    finally:
        os.kill(supervisor, signal.SIGCONT)

    def all_healthy() -> bool:
        status = slmops(stack_home, "status", "--json", check=False)
        return status.returncode == 0

    _until(all_healthy, "every component healthy again")
    after = _stack(stack_home)["servers"]
    for name, pid in (("nats", nats_pid), ("s3", s3_pid)):
        assert after[name]["pid"] != pid
        assert after[name]["restarts"] == restarts[name] + 1
        assert after[name]["last_restart"]["reason"] == "exited with -9"
    assert isinstance(json.loads(slmops(stack_home, "model", "list", "--json").stdout), list)


def test_a_hung_nats_server_is_restarted_although_its_pid_lives(stack_home: Path) -> None:
    nats_pid = _stack(stack_home)["servers"]["nats"]["pid"]
    os.kill(nats_pid, signal.SIGSTOP)  # alive, answering nothing
    _until(lambda: _stack(stack_home)["servers"]["nats"]["pid"] != nats_pid, "the hung nats-server replaced")
    assert "unready" in _stack(stack_home)["servers"]["nats"]["last_restart"]["reason"]
    _until(lambda: slmops(stack_home, "status", check=False).returncode == 0, "every component healthy again")


def test_doctor_finds_a_record_whose_blob_is_gone_and_its_repair_works(stack_home: Path, sample: Path) -> None:
    eval_set = sample / "tiny-embedder-eval.npz"
    slmops(stack_home, "model", "push", str(sample / "tiny-embedder.onnx"), "-n", "doc", "-v", "1.0.0",
           "--eval-set", str(eval_set))  # fmt: skip
    shown = json.loads(slmops(stack_home, "model", "show", "doc", "1.0.0", "--json").stdout)
    ArtifactStore.from_settings(_settings(stack_home)).delete(shown["version"]["eval_set"]["key"])

    found = slmops(stack_home, "doctor", "--json", check=False)
    assert found.returncode == 1
    # Blobs are content-addressed: other versions of the same sample bytes lose it too.
    findings = {f["record"]: f for f in json.loads(found.stdout)["findings"]}
    finding = findings["version.doc.1=0=0"]
    assert "missing" in finding["problem"] and shown["version"]["eval_set"]["digest"] in finding["repairs"][0]
    assert finding["repairs"][0].startswith("slmops doctor --restore FILE")
    assert finding["repairs"][1] == "slmops doctor --forget version.doc.1=0=0"

    slmops(stack_home, "doctor", "--restore", str(eval_set))
    assert slmops(stack_home, "doctor").returncode == 0
