"""`slmops agent`: run this machine as an edge device until interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import typer

from shared import bus
from shared.cli.common import console, fail, run
from shared.settings import load_settings


def agent(
    device_id: str = typer.Option(..., "--device-id", help="Unique device id ([A-Za-z0-9_-], max 64)."),
    device_class: str = typer.Option(..., "--class", help="Fleet class, e.g. rpi5, jetson, gateway."),
    labels: str = typer.Option("", help="Comma-separated key=value labels, e.g. site=berlin,line=3."),
    state_dir: Path = typer.Option(Path(".slmops/devices"), help="Where slots and local state live."),
    http_port: int = typer.Option(8470, help="Local inference endpoint on 127.0.0.1 (0 = any free port, -1 = off)."),
    heartbeat: float = typer.Option(30.0, help="Seconds between hellos."),
    telemetry: float = typer.Option(10.0, help="Seconds per telemetry window."),
    rate_limit: int | None = typer.Option(None, help="Download rate limit in bytes/s (slow links, tests)."),
    arch: str | None = typer.Option(None, help="Override the detected architecture."),
    ram_mb: int | None = typer.Option(None, help="Override the detected RAM (MiB)."),
) -> None:
    """Follow this device's desired model: download, verify, switch slots, serve, report."""
    from services.edge_agent.agent import Agent, AgentConfig
    from services.edge_agent.capabilities import detect
    from services.edge_agent.http_api import serve
    from services.edge_agent.link import DeviceLink
    from shared.messages.device import DeviceHello

    parsed: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in labels.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--labels wants key=value pairs, got {item!r}")
        parsed[key] = value
    try:  # validate id, class and labels the way the registry side will, before connecting
        caps = detect(arch=arch, ram_mb=ram_mb)
        DeviceHello(
            device_id=device_id,
            device_class=device_class,
            arch=caps.arch,
            ram_mb=caps.ram_mb,
            cpu_count=caps.cpu_count,
            onnxruntime_version=caps.onnxruntime_version,
            execution_providers=caps.execution_providers,
            labels=parsed,
            agent_version="check",
        )
    except ValueError as exc:
        fail(f"invalid device settings: {exc}")
    config = AgentConfig(
        device_id=device_id,
        device_class=device_class,
        labels=parsed,
        state_dir=state_dir,
        heartbeat_seconds=heartbeat,
        telemetry_seconds=telemetry,
        download_rate_limit_bps=rate_limit,
    )

    async def main() -> None:
        nc = await bus.connect(load_settings(), name=f"slmops-agent-{device_id}")
        device = Agent(config, link=DeviceLink(nc, device_id=device_id), capabilities=caps)
        server = serve(device, port=http_port) if http_port >= 0 else None
        if server:
            console.print(f"device {device_id}: inference on http://127.0.0.1:{server.server_address[1]}/v1/infer")
        task = asyncio.create_task(device.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if server:
            server.shutdown()
        await nc.close()

    run(main())
