"""docker-compose's security properties, checked without Docker: its NATS configuration is valid
for the real nats-server with the trust `slmops auth init` writes, every platform container has its
own credentials, and nothing secret or administrative is published on every interface."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.auth import bootstrap
from shared.discovery import service_names
from shared.stack.servers import find_executable

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
PLATFORM = tuple(service_names())  # every installed service, so a new one cannot be left out of compose


def test_the_nats_configuration_is_valid_with_the_generated_trust(tmp_path: Path) -> None:
    authority = bootstrap.prepare(tmp_path / "auth", [])
    server_dir = tmp_path / "etc" / "auth"
    authority.export_server_part(server_dir, resolver_dir=tmp_path / "resolver")
    shutil.copy(ROOT / "deploy" / "nats" / "nats.conf", tmp_path / "etc" / "nats.conf")
    config = (tmp_path / "etc" / "nats.conf").read_text().replace("/data/jetstream", str(tmp_path / "js"))
    (tmp_path / "etc" / "nats.conf").write_text(config)
    checked = subprocess.run(
        [find_executable("nats-server"), "-t", "-c", str(tmp_path / "etc" / "nats.conf")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "operator.jwt" in (server_dir / "nats-auth.conf").read_text()
    assert not list(server_dir.glob("*.nk")), "the server's volume must hold no keys"


@pytest.mark.parametrize("name", PLATFORM)
def test_each_platform_service_connects_with_its_own_credentials(name: str) -> None:
    env = SERVICES[name]["environment"]
    assert env["SLMOPS_NATS_CREDS"] == f"/var/lib/slmops/auth/creds/service-{name}.creds"
    assert "SLMOPS_NATS_PASSWORD" not in env and "SLMOPS_NATS_USER" not in env


def test_auth_init_issues_credentials_for_every_platform_service() -> None:
    command = " ".join(SERVICES["auth-init"]["command"])
    listed = re.search(r"--services (\S+)", command)
    assert listed and set(listed.group(1).split(",")) == set(PLATFORM)


def test_no_default_minio_root_credentials_and_the_services_are_not_root() -> None:
    minio = SERVICES["minio"]["environment"]
    for key in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        assert minio[key].startswith("${") and ":?" in minio[key], f"{key} must be required from .env"
    assert SERVICES["registry"]["environment"]["SLMOPS_S3_ACCESS_KEY"] != minio["MINIO_ROOT_USER"]


def test_only_what_devices_need_is_published_beyond_loopback() -> None:
    public = {"nats": "4222", "minio": "9000"}  # devices connect to NATS and download from MinIO
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            host = port.rsplit(":", 2)[0] if port.count(":") == 2 else None
            if port.endswith(f":{public.get(name, '-')}"):
                continue
            assert host == "127.0.0.1", f"{name} publishes {port} on every interface"
