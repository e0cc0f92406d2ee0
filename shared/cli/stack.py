"""`slmops up|down|status`, `slmops stack init`, `slmops service run`: the platform's processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import typer

from shared.cli.common import JsonOption, console, fail, print_json, run

if TYPE_CHECKING:
    from shared.settings import Settings

stack_app = typer.Typer(help="The platform's processes.", no_args_is_help=True)
service_app = typer.Typer(help="Run one service in the foreground.", no_args_is_help=True)


def up(
    nats_port: int = typer.Option(None, help="NATS port (0 = any free port). Default: from SLMOPS_NATS_URL."),
    s3_port: int = typer.Option(None, help="S3 port (0 = any free port). Default: from SLMOPS_S3_ENDPOINT."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Start in the background and return once healthy."),
    timeout: float = typer.Option(90.0, help="Seconds to wait for every component to be healthy."),
) -> None:
    """Start the embedded stack: nats-server, an S3 server and every service; Ctrl-C stops it all."""
    import asyncio

    from shared.cli import render
    from shared.settings import Settings
    from shared.stack.servers import ServerError
    from shared.stack.supervisor import Stack, port_of

    settings = Settings()
    if _running(settings) is not None:
        fail(f"a stack is already running from {settings.home} (see `slmops status`; `slmops down` stops it)")
    nats = port_of(settings.nats_url, 4222) if nats_port is None else nats_port
    s3 = port_of(settings.s3_endpoint, 9000) if s3_port is None else s3_port
    if detach:
        _up_detached(settings, nats, s3, timeout)
        return
    stack = Stack(settings, nats_port=nats, s3_port=s3)
    # Signal handlers only ask; the main thread does the stopping, so no restart can race it.
    signal.signal(signal.SIGINT, lambda *_: stack.request_stop())
    signal.signal(signal.SIGTERM, lambda *_: stack.request_stop())
    try:
        with console.status("starting nats-server, S3 and services…"):
            stack.start(ready_timeout=timeout)
    except ServerError as exc:
        fail(str(exc))
    console.print(render.stack_status(asyncio.run(_status(stack.settings))))
    console.print(f"stack is up; logs in {stack.log_dir}. Ctrl-C (or `slmops down`) stops it.")
    try:
        stack.supervise()
    finally:
        console.print("stopping…")
        stack.stop()
    console.print("stopped.")


def down(timeout: float = typer.Option(60.0, help="Seconds to wait for a clean stop.")) -> None:
    """Stop a running embedded stack (services first, then S3 and NATS)."""
    from shared.settings import Settings

    settings = Settings()
    info = _running(settings)
    if info is None:
        console.print("no stack is running.")
        return
    pid = int(info["supervisor_pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    if _pid_alive(pid):
        fail(f"the stack (pid {pid}) did not stop within {timeout:.0f}s")
    console.print("stack stopped.")


def status(as_json: bool = JsonOption) -> None:
    """What runs, where, and whether it is healthy."""
    import asyncio

    from shared.cli import render
    from shared.settings import Settings, load_settings

    settings = Settings()
    if _running(settings) is None:
        if as_json:
            print_json({"running": False, "components": []})
        else:
            console.print(f"no stack is running from {settings.home}.")
        raise typer.Exit(1)
    report = asyncio.run(_status(load_settings()))
    if as_json:
        print_json(report)
    else:
        console.print(render.stack_status(report))
    if not all(c["healthy"] for c in report["components"]):
        raise typer.Exit(1)


@stack_app.command("init")
def init() -> None:
    """Create streams, KV buckets, the artifact bucket and the signing key (docker-compose's init job)."""
    from shared.settings import load_settings
    from shared.stack.supervisor import init_platform

    settings = load_settings()
    run(init_platform(settings))
    console.print(f"platform initialised on {settings.nats_url} and {settings.s3_endpoint}")


@service_app.command("run")
def service_run(name: str = typer.Argument(..., help="A service, e.g. registry or optimizer.")) -> None:
    """Run service NAME in the foreground until SIGINT/SIGTERM (what `slmops up` and compose run)."""
    import asyncio

    from shared.discovery import load_service
    from shared.errors import SlmopsError

    try:
        asyncio.run(load_service(name)().app().run())
    except SlmopsError as exc:  # an unknown name, a bad configuration found at start-up
        fail(f"{name} cannot start: {exc}")


async def _status(settings: Settings) -> dict[str, Any]:
    import asyncio

    from shared.artifacts import ArtifactStore
    from shared.errors import SlmopsError
    from shared.stack.servers import http_ready
    from shared.stack.supervisor import service_health

    info = _running(settings) or {}
    components: list[dict[str, Any]] = []
    servers = info.get("servers", {})
    health = await service_health(settings, list(info.get("services", {})))
    # A pid proves nothing (a killed child is a zombie until the supervisor reaps it): each server
    # is asked what it answers, NATS its JetStream health, S3 whether the artifact bucket is there.
    nats = servers.get("nats", {})
    nats_ok = bool(nats.get("ready_url")) and await asyncio.to_thread(http_ready, nats["ready_url"])
    components.append(_component("nats", nats, settings.nats_url, nats_ok))
    try:
        await asyncio.to_thread(ArtifactStore.from_settings(settings).ping)
        s3_ok = True
    except SlmopsError:
        s3_ok = False
    components.append(_component("s3", servers.get("s3", {}), settings.s3_endpoint, s3_ok))
    for name, svc in info.get("services", {}).items():
        components.append(_component(name, svc, "", health.get(name, False)))
    return {"running": True, "home": info.get("home"), "components": components}


def _component(name: str, info: dict[str, Any], address: str, healthy: bool) -> dict[str, Any]:
    """One row of `slmops status`: what stack.json says of the child, and what it answered now."""
    return {
        "name": name,
        "pid": info.get("pid"),
        "address": address,
        "healthy": healthy,
        "restarts": info.get("restarts", 0),
        "last_restart": info.get("last_restart"),
    }


def _up_detached(settings: Settings, nats: int, s3: int, timeout: float) -> None:
    import asyncio

    settings.home.mkdir(parents=True, exist_ok=True)
    log_path = settings.home / "stack.log"
    cmd = [
        sys.executable,
        "-m",
        "shared.cli.main",
        "up",
        "--nats-port",
        str(nats),
        "--s3-port",
        str(s3),
        "--timeout",
        str(timeout),
    ]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + timeout + 10
    with console.status("starting the stack in the background…"):
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                fail(f"the stack failed to start; see {log_path}:\n{log_path.read_text(errors='replace')[-2000:]}")
            if _running(settings) is not None:
                from shared.cli import render
                from shared.settings import load_settings

                report = asyncio.run(_status(load_settings()))
                if all(c["healthy"] for c in report["components"]):
                    console.print(render.stack_status(report))
                    console.print(f"stack is up in the background (pid {proc.pid}); `slmops down` stops it.")
                    return
            time.sleep(0.3)
    proc.terminate()
    fail(f"the stack was not healthy within {timeout:.0f}s; see {log_path}")


def _running(settings: Settings) -> dict[str, Any] | None:
    """The stack file of a live supervisor, or None (a stale file from a crash is ignored)."""
    from shared.settings import STACK_FILE

    path = settings.home / STACK_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if _pid_alive(int(info.get("supervisor_pid", 0))) else None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
