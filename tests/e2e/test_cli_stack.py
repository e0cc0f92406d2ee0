"""The embedded stack as a user runs it: `slmops up -d`, push, list, show, alias, status, down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _env(home: Path) -> dict[str, str]:
    """Only SLMOPS_HOME: every other address must come from the running stack's stack.json."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLMOPS_")} | {
        "SLMOPS_HOME": str(home),
        "COLUMNS": "200",
    }


def slmops(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "shared.cli.main", *args], env=_env(home), capture_output=True, text=True, timeout=180
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"slmops {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_embedded_stack_registers_a_model_end_to_end(stack_home: Path, tmp_path: Path) -> None:
    status = json.loads(slmops(stack_home, "status", "--json").stdout)
    assert {c["name"] for c in status["components"]} == {
        "nats",
        "s3",
        "registry",
        "optimizer",
        "intake",
        "telemetry",
        "rollout",
        "blueprints",
    }
    assert all(c["healthy"] for c in status["components"])
    assert slmops(stack_home, "up", "--detach", check=False).returncode != 0, "a second `up` must refuse"
    assert (stack_home / "keys" / "registry-ed25519.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")

    slmops(stack_home, "model", "sample", str(tmp_path))
    model, eval_set = tmp_path / "tiny-embedder.onnx", tmp_path / "tiny-embedder-eval.npz"
    pushed = json.loads(
        slmops(
            stack_home,
            "model",
            "push",
            str(model),
            "--name",
            "tiny",
            "--version",
            "1.0.0",
            "--eval-set",
            str(eval_set),
            "--label",
            "task=embedding",
            "--json",
        ).stdout
    )
    assert pushed["status"] == "applied"
    again = slmops(stack_home, "model", "push", str(model), "-n", "tiny", "-v", "1.0.0")
    assert "already registered" in again.stdout

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"GIF89a not a model")
    rejected = slmops(stack_home, "model", "push", str(junk), "-n", "tiny", "-v", "2.0.0", check=False)
    assert rejected.returncode == 1 and "not an ONNX model" in rejected.stderr

    listed = json.loads(slmops(stack_home, "model", "list", "--json").stdout)
    assert [(m["name"], m["versions"]) for m in listed] == [("tiny", ["1.0.0"])]

    slmops(stack_home, "model", "alias", "tiny", "stable", "1.0.0")
    shown = json.loads(slmops(stack_home, "model", "show", "tiny", "stable", "--json").stdout)
    assert shown["version"]["artifact"]["digest"] == pushed["result"]["digest"]
    assert shown["aliases"] == ["stable"] and shown["version"]["eval_set"]["samples"] == 32
    table = slmops(stack_home, "model", "show", "tiny").stdout
    assert "input_ids" in table and "68,163" in table

    optimized = json.loads(
        slmops(stack_home, "optimize", "tiny", "1.0.0", "--profile", "jetson", "--watch", "--json").stdout
    )
    (variant,) = optimized["registered"]
    shown = json.loads(slmops(stack_home, "model", "show", "tiny", "1.0.0", "--json").stdout)
    assert [v["variant"] for v in shown["variants"]] == [variant["variant"]]
    unknown = slmops(stack_home, "optimize", "tiny", "1.0.0", "--profile", "nope", "--watch", check=False)
    assert unknown.returncode == 1 and "unknown profile 'nope'" in unknown.stderr

    enrolled = json.loads(slmops(stack_home, "device", "enroll", "bench-1", "--class", "jetson", "--json").stdout)
    again = slmops(stack_home, "device", "enroll", "bench-1", "--class", "jetson", check=False)
    assert again.returncode == 1 and "already enrolled" in again.stderr
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shared.cli.main",
            "agent",
            "--identity",
            enrolled["identity"],
            "--state-dir",
            str(tmp_path / "devices"),
            "--http-port",
            "-1",
        ],
        env=_env(stack_home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(60):  # a device is assignable once its first hello is in the inventory
            attempt = slmops(stack_home, "device", "assign", "bench-1", "tiny", "stable", "--json", check=False)
            if "in the inventory" not in attempt.stderr:
                break
            time.sleep(0.5)
        assert attempt.returncode == 0, attempt.stderr
        assigned = json.loads(attempt.stdout)
        assert assigned["rollout_id"].startswith("assign-")
        for _ in range(60):
            state = json.loads(slmops(stack_home, "device", "status", "bench-1", "--json").stdout)
            if (state["last_status"] or {}).get("step") == "active":
                break
            time.sleep(0.5)
        # A jetson gets the variant the optimizer built for its class (a rollout's resolution).
        (jetson_variant,) = shown["variants"]
        assert assigned["variant"] == jetson_variant["variant"]
        assert state["last_status"]["digest"] == assigned["digest"] == jetson_variant["artifact"]["digest"]
        bad = slmops(stack_home, "device", "assign", "bench-1", "tiny", "1.0.0", "--variant", "nope", check=False)
        assert bad.returncode == 1 and "has no variant 'nope'" in bad.stderr
    finally:
        agent.terminate()
        agent.wait(timeout=20)
    revoked = json.loads(slmops(stack_home, "device", "revoke", "bench-1", "--json").stdout)
    assert revoked["pushed"] is True  # the running server took the revocation at once
    (listed,) = json.loads(slmops(stack_home, "auth", "list", "--role", "device", "--json").stdout)
    assert listed["name"] == "bench-1" and listed["revoked_at"] == revoked["revoked_at"]

    summary = json.loads(slmops(stack_home, "telemetry", "show", pushed["result"]["digest"], "--json").stdout)
    assert summary["position"] >= 0 and all(c["cohort"]["device_class"] == "jetson" for c in summary["cohorts"])
    assert "telemetry: last 60 s" in slmops(stack_home, "telemetry", "top", "--once").stdout
    not_a_digest = slmops(stack_home, "telemetry", "show", "abc", check=False)
    assert not_a_digest.returncode == 1 and "is not a sha256 digest" in not_a_digest.stderr

    missing = slmops(stack_home, "model", "show", "nope", check=False)
    assert missing.returncode == 1 and "no model named 'nope'" in missing.stderr

    slmops(stack_home, "down")
    assert slmops(stack_home, "status", check=False).returncode == 1
    assert not (stack_home / "stack.json").exists()
