"""`slmops fleet simulate` and `slmops agent` refuse bad options before they connect to anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from services.edge_agent.cli import agent, device_app, fleet_app

# `agent` is a single command (the root CLI adds it by entry point): a one-command app to invoke it.
agent_app = typer.Typer()
agent_app.command()(agent)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mix", "rpi5=60,toaster=40"], "unknown device class 'toaster'"),
        (["--faults", "offline=5%,gremlins=1%"], "unknown fault 'gremlins'"),
        (["--faults", "offline=80%,crash=30%"], "add up to 110%"),
        (["--devices", "0"], "--devices must be at least 1"),
        (["--devices", "10", "--connections", "11"], "--connections must be between 1 and --devices"),
        (["--duration", "-1"], "--duration cannot be negative"),
    ],
)
def test_bad_options_exit_2_with_the_reason(args: list[str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMOPS_NATS_URL", "nats://127.0.0.1:1")  # nothing listens: it must fail before connecting
    result = CliRunner().invoke(fleet_app, ["simulate", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_the_agent_refuses_to_run_without_an_identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SLMOPS_NATS_URL", "nats://127.0.0.1:1")  # nothing listens: it must fail before connecting
    result = CliRunner().invoke(agent_app, [])
    assert result.exit_code == 1, result.output
    assert "no identity: enroll this device" in " ".join(result.output.split())
    result = CliRunner().invoke(agent_app, ["--identity", str(tmp_path)])
    assert result.exit_code == 1 and "is not an enrolled device's identity" in " ".join(result.output.split())


def test_the_agent_refuses_an_id_its_credentials_do_not_speak_for(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_identity(tmp_path, "dev-1")
    monkeypatch.setenv("SLMOPS_NATS_URL", "nats://127.0.0.1:1")
    result = CliRunner().invoke(agent_app, ["--identity", str(tmp_path), "--device-id", "dev-2"])
    assert result.exit_code == 1 and "is not the enrolled id dev-1" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bad id", "--class", "rpi5"], "device_id"),
        (["ok", "--class", "Not A Class"], "device_class"),
        (["ok", "--class", "rpi5", "--labels", "site"], "--labels wants key=value, got 'site'"),
    ],
)
def test_enrol_refuses_a_bad_identity_before_issuing_anything(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SLMOPS_HOME", str(tmp_path))
    result = CliRunner().invoke(device_app, ["enroll", *args])
    assert result.exit_code in (1, 2), result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "auth").exists()


def write_identity(directory: Path, device_id: str) -> None:
    from services.edge_agent import identity

    identity.write(
        directory,
        identity.DeviceIdentity(device_id=device_id, device_class="rpi5", registry_key_id="k"),
        credentials="not used: the agent fails before it connects",
        registry_key_pem="-----BEGIN PUBLIC KEY-----",
    )


def test_the_agent_takes_its_defaults_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.edge_agent.settings import AgentSettings

    monkeypatch.setenv("SLMOPS_AGENT_STATE_DIR", "/var/lib/slmops/device")
    monkeypatch.setenv("SLMOPS_AGENT_HTTP_PORT", "-1")
    settings = AgentSettings()
    assert (str(settings.agent_state_dir), settings.agent_http_port) == ("/var/lib/slmops/device", -1)
    monkeypatch.setenv("SLMOPS_AGENT_TELEMETRY_SECONDS", "0")
    result = CliRunner().invoke(agent_app, [])
    assert result.exit_code == 1 and "invalid SLMOPS_AGENT_* settings" in result.output


def test_revoking_while_the_server_is_down_is_kept_for_its_next_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from shared.auth import tokens, updates
    from shared.auth.authority import Authority

    monkeypatch.setattr(updates, "CONNECT_SECONDS", 0.5)  # how long to try an absent server
    authority = Authority.create(tmp_path / "auth")
    authority.issue("device", "dev-1")
    monkeypatch.setenv("SLMOPS_HOME", str(tmp_path))
    monkeypatch.setenv("SLMOPS_NATS_URL", "nats://127.0.0.1:1")  # no server: the push cannot be delivered
    result = CliRunner().invoke(device_app, ["revoke", "dev-1"])
    assert result.exit_code == 0, result.output
    assert "takes the revocation when it starts" in " ".join(result.output.split())
    identity = authority.identity("device", "dev-1")
    assert identity is not None and not identity.active
    revoked = tokens.decode_claims(authority.account_jwt())["nats"]["revocations"]
    assert identity.public_key in revoked
