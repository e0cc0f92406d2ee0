"""Hands-off delivery, as a user sets it up: the demo fleet's blueprint (deploy/examples/blueprint.yaml)
applied once, then the CI example (deploy/examples/release.sh) pushing a new version with the alias
`candidate`, against the embedded stack with simulated devices and one real edge agent at the pinned
site. Nothing else is typed: the blueprints service builds each class's variant, rolls the version
out in gated waves and promotes it to `stable`.

Checked at the end: every device of the fleet runs the new version with its class's variant, the
pinned site still runs the pinned version, and the override's settings are on its device (served by
the agent's local HTTP API to applications).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.test_cli_stack import _env, slmops

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "examples" / "blueprint.yaml"
RELEASE = ROOT / "deploy" / "examples" / "release.sh"
FLEET = 9  # simulated devices, three per class
CLASSES = {"rpi5", "jetson", "gateway"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(what: str, check: Any, *, timeout: float = 180, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def test_a_version_pushed_by_ci_reaches_every_class_and_the_pinned_site_keeps_its_own(
    stack_home: Path, tmp_path: Path
) -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    lab = next(o for o in example["spec"]["overrides"] if "pin" in o)
    profiles: dict[str, str] = example["spec"]["profiles"]

    # The fleet's first version, as the candidate (the lab site's pin).
    slmops(stack_home, "model", "sample", str(tmp_path / "v1"))
    slmops(
        stack_home,
        "model",
        "push",
        str(tmp_path / "v1" / "tiny-embedder.onnx"),
        "--name",
        "tiny-embedder",
        "--version",
        lab["pin"],
        "--eval-set",
        str(tmp_path / "v1" / "tiny-embedder-eval.npz"),
        "--alias",
        "candidate",
    )

    # The devices: simulated ones of every class, and a real agent at the lab site.
    labels = ",".join(f"{k}={v}" for k, v in {**example["spec"]["selector"]["labels"], **lab["match"]}.items())
    identity = tmp_path / "lab-1"
    slmops(stack_home, "device", "enroll", "lab-1", "--class", "rpi5", "--labels", labels, "--out", str(identity))
    port = free_port()
    agent = subprocess.Popen(
        [sys.executable, "-m", "shared.cli.main", "agent", "--identity", str(identity)]
        + ["--state-dir", str(tmp_path / "agent"), "--http-port", str(port), "--telemetry", "2"],
        env=_env(stack_home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    fleet = subprocess.Popen(
        [sys.executable, "-m", "shared.cli.main", "fleet", "simulate", "--devices", str(FLEET)]
        + ["--mix", "rpi5=1,jetson=1,gateway=1", "--duration", "0", "--window", "2", "--rate", "40"]
        + ["--heartbeat", "5", "--real-inference", "0", "--id-prefix", example["spec"]["selector"]["labels"]["fleet"]],
        env=_env(stack_home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Applied once the devices are in the inventory (a blueprint that selects nothing is refused).
        def applied() -> dict[str, Any] | None:
            proc = slmops(stack_home, "apply", "-f", str(EXAMPLE), "--json", check=False)
            if proc.returncode == 0:
                result: dict[str, Any] = json.loads(proc.stdout)
                if sum(g["count"] for g in result["groups"]) == FLEET + 1:
                    return result
            return None

        first = until("the blueprint to be applied over the whole fleet", applied, every=1)
        assert [(b["name"], b["action"]) for b in first["blueprints"]] in (
            [("demo-fleet", "created")],
            [("demo-fleet", "configured")],
            [("demo-fleet", "unchanged")],
        )
        again = json.loads(slmops(stack_home, "apply", "-f", str(EXAMPLE), "--json").stdout)
        assert [b["action"] for b in again["blueprints"]] == ["unchanged"], "the same file twice changes nothing"
        broken = tmp_path / "broken.yaml"
        broken.write_text(EXAMPLE.read_text().replace("jetson: jetson", "jetson: no-such-profile"))
        refused = slmops(stack_home, "apply", "-f", str(broken), check=False)
        assert refused.returncode == 1 and "spec.profiles.jetson: unknown profile 'no-such-profile'" in refused.stderr
        (kept,) = json.loads(slmops(stack_home, "blueprint", "list", "--json").stdout)
        assert kept["generation"] == first["blueprints"][0]["generation"], "a refused apply stores nothing"

        # The first version reaches the fleet on its own (it is the candidate), and is promoted.
        waited = slmops(stack_home, "blueprint", "wait", "demo-fleet", "--version", lab["pin"], "--timeout", "300")
        assert "delivered" in waited.stdout

        # The CI job: a retrained version, pushed as the candidate; it waits for the fleet.
        slmops(stack_home, "model", "sample", "--seed", "1", str(tmp_path / "v2"))
        release = subprocess.run(
            ["bash", str(RELEASE), str(tmp_path / "v2" / "tiny-embedder.onnx")]
            + [str(tmp_path / "v2" / "tiny-embedder-eval.npz"), "1.1.0"],
            env=_env(stack_home) | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert release.returncode == 0, f"{release.stdout}\n{release.stderr}"
        assert "1.1.0 delivered by blueprint demo-fleet" in release.stdout

        detail = json.loads(slmops(stack_home, "blueprint", "show", "demo-fleet", "--json").stdout)
        shown = json.loads(slmops(stack_home, "model", "show", "tiny-embedder", "1.1.0", "--json").stdout)
        built = {v["recipe"].get("profile"): v["variant"] for v in shown["variants"]}
        assert "stable" in shown["aliases"], "promoted once every wave passed"
        groups = detail["groups"]
        assert all(g["reason"] == "unchanged" for g in groups), [
            (g["override"], g["device_class"], g["before"], g["reason"]) for g in groups
        ]
        fleet_groups = [g for g in groups if g["override"] is None]
        assert {g["device_class"] for g in fleet_groups} == CLASSES
        assert sum(g["count"] for g in fleet_groups) == FLEET
        for group in fleet_groups:
            running = group["before"]
            assert running["version"] == "1.1.0"
            wanted = built.get(profiles[group["device_class"]])
            if wanted is not None:  # the optimizer built one for the class's profile on this host
                assert running["variant"] == wanted, group
        (lab_group,) = [g for g in groups if g["override"] == lab["name"]]
        assert lab_group["before"]["version"] == lab["pin"] and lab_group["devices"] == ["lab-1"]

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/config", timeout=10) as reply:
            assert json.load(reply) == lab["config"]
        status = json.loads(slmops(stack_home, "device", "status", "lab-1", "--json").stdout)
        assert status["desired"]["version"] == lab["pin"] and status["desired"]["config"] == lab["config"]

        history = [s["state"] for s in detail["status"]["rollouts"]]
        assert history and all(state == "completed" for state in history), detail["status"]
    finally:
        for process in (agent, fleet):
            process.terminate()
        for process in (agent, fleet):
            process.wait(timeout=30)
