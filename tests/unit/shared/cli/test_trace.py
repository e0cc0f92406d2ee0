"""`slmops trace ROLLOUT_ID`: the tree from a synthetic span file, `--json`, and the errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shared.cli.main import build_app
from tests.unit.shared.test_trace_tree import line, span


def wave_of(devices: int, *, failed: int) -> list[Any]:
    """A rollout: its root, wave 0 with a gate, wave 1 with `devices` installs (the last `failed` fail)."""
    spans = [
        span("rollout", "root", start=0, ms=60_000, rollout_id="r1"),
        span("rollout.wave", "w0", parent="root", start=1, ms=20_000, rollout_id="r1", wave=0, devices=3),
        span("rollout.gate", "g0", parent="w0", start=19_000, rollout_id="r1", wave=0, verdict="pass"),
        span("rollout.wave", "w1", parent="root", start=21_000, ms=30_000, rollout_id="r1", wave=1, devices=devices),
    ]
    for i in range(devices):
        spans.append(
            span(
                "device.install",
                f"i{i}",
                parent="w1",
                start=21_001 + i,
                ms=1_000 + i,
                status="ERROR" if i >= devices - failed else "OK",
                service="slmops-fleet",
                rollout_id="r1",
                wave=1,
                device_id=f"sim-{i:05d}",
                device_class="rpi5",
                outcome="failed" if i >= devices - failed else "active",
            )
        )
    return spans


@pytest.fixture
def home(tmp_path: Path) -> Path:
    spans = [*wave_of(1000, failed=10), span("rollout", "other", trace="f" * 32, rollout_id="r2")]
    (tmp_path / "traces.jsonl").write_text("".join(line(s) + "\n" for s in spans))
    return tmp_path


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A console wide enough that no line wraps (the runner's terminal is 80 columns)."""
    from shared.cli.common import console

    monkeypatch.setattr(console, "width", 240)


def slmops(home: Path, *args: str, **env: str) -> Any:
    return CliRunner().invoke(
        build_app(), ["trace", *args], env={"SLMOPS_HOME": str(home), "SLMOPS_OTEL_EXPORTER": "file", **env}
    )


def flat(text: str) -> str:
    return " ".join(text.split())


def test_the_tree_shows_waves_gates_and_a_wave_of_devices_collapsed(home: Path) -> None:
    result = slmops(home, "r1")
    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert "trace " + "a" * 32 in out and "1,004 spans" in out
    assert "rollout slmops-rollout 1 min 00 s ok" in out
    assert "rollout.wave slmops-rollout 20.0 s ok wave=0 devices=3" in out
    assert "rollout.gate slmops-rollout 1.0 ms ok wave=0 verdict=pass" in out
    assert "device.install slmops-fleet 2.0 s ERROR wave=1 class=rpi5 device=sim-00990 outcome=failed" in out
    assert out.count("device.install slmops-fleet") == 5, "five shown, the failed ones first"
    # Hidden: installs 0-989 (ok) and 995-999 (failed), each lasting 1 s + i ms.
    assert "… 995 more device.install: 990 ok, 5 error, p50 1.5 s, max 2.0 s" in out
    assert (
        out.index("rollout.wave slmops-rollout 20.0 s") < out.index("rollout.gate") < out.index("wave=1 devices=1000")
    )
    assert "r2" not in out


def test_json_is_the_whole_tree(home: Path) -> None:
    import json

    result = slmops(home, "r1", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    (trace,) = data["traces"]
    (root,) = trace["roots"]
    assert [c["span_id"] for c in root["children"]] == ["w0", "w1"]
    installs = root["children"][1]["children"]
    assert len(installs) == 1000 and installs[0]["duration_ms"] == 1_000.0
    assert installs[-1]["status"] == "ERROR" and installs[-1]["attributes"]["slmops.device_id"] == "sim-00999"
    assert trace["complete"] and data["rollout_id"] == "r1" and data["unreadable_lines"] == 0


def test_orphans_are_grouped_under_the_missing_parent(tmp_path: Path) -> None:
    spans = [s for s in wave_of(12, failed=0) if s.span_id not in ("root", "w1")]  # the rollout is still running
    (tmp_path / "traces.jsonl").write_text("".join(line(s) + "\n" for s in spans))
    out = flat(slmops(tmp_path, "r1").output)
    assert "span root (not in the span file" in out and "span w1 (not in the span file" in out
    assert "… 7 more device.install: 7 ok, 0 error" in out


def test_no_span_file(tmp_path: Path) -> None:
    result = slmops(tmp_path, "r1")
    assert result.exit_code == 1
    err = flat(result.stderr)
    assert f"no span file at {tmp_path / 'traces.jsonl'}" in err and "http://localhost:16686" in err


def test_no_span_for_that_rollout(home: Path) -> None:
    result = slmops(home, "r404")
    assert result.exit_code == 1 and "no span in" in result.stderr and "r404" in result.stderr


def test_an_otlp_exporter_points_at_jaeger(home: Path) -> None:
    result = slmops(home, "r1", SLMOPS_OTEL_EXPORTER="otlp", SLMOPS_OTLP_ENDPOINT="http://jaeger:4318")
    assert result.exit_code == 1
    err = flat(result.stderr)
    assert "the trace is in Jaeger: open http://localhost:16686" in err and "slmops.rollout_id=r1" in err


def test_what_is_not_a_rollout_id_is_refused(home: Path) -> None:
    result = slmops(home, "r1/../x")
    assert result.exit_code == 1 and "not a rollout id" in result.stderr
