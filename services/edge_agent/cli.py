"""The device side from the command line: `slmops agent`, `slmops device assign|status`, `slmops fleet simulate`.

* `agent` runs this machine as an edge device until interrupted.
* `device assign|status` set a device's desired model by hand and show where it is: one KV write,
  what the rollout service does at scale, and how you try a model on a bench device (as hawkBit's
  or Mender's manual assignment does).
* `fleet simulate` runs a fleet of simulated devices on the real bus, then prints its report.

`agent` and `fleet simulate` install the process's tracer provider (`shared.tracing`), so each
install's `device.install` span lands in `<home>/traces.jsonl` or goes over OTLP, per
`SLMOPS_OTEL_EXPORTER`; `none` leaves the no-op tracer in place.

Only typer is imported up front; each command imports what it runs (onnxruntime, NATS, the simulator).
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from services.edge_agent.fleet.config import DEFAULT_MIX
from shared.cli.common import (
    CLI_SOURCE,
    JsonOption,
    authority_at,
    console,
    err_console,
    fail,
    parse_labels,
    print_json,
    run,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from services.edge_agent.agent import AgentConfig
    from services.edge_agent.capabilities import Capabilities
    from services.edge_agent.fleet.config import SimulationConfig
    from services.edge_agent.fleet.report import FleetReport
    from services.edge_agent.settings import AgentSettings
    from shared.settings import Settings

device_app = typer.Typer(help="Devices: assign a model by hand, show install status.", no_args_is_help=True)
fleet_app = typer.Typer(no_args_is_help=True)

FAULTS_HELP = (
    "Injected faults, each a share (offline=5%) or a number of devices (crash=3): offline, slow, download_fail, "
    "flaky, corrupt, crash; a device gets at most one. E.g. offline=5%,slow=10%,download_fail=2%,corrupt=1%,crash=2%."
)


# --- slmops agent ------------------------------------------------------------------------------


def agent(
    identity_dir: Path | None = typer.Option(
        None,
        "--identity",
        help="The directory `slmops device enroll` wrote: id, class, labels, credentials, pinned registry key "
        "(default: SLMOPS_AGENT_IDENTITY_DIR).",
    ),
    device_id: str | None = typer.Option(None, "--device-id", help="Must match the identity's, if given."),
    device_class: str | None = typer.Option(None, "--class", help="Fleet class (default: the enrolled one)."),
    labels: str | None = typer.Option(None, help="Comma-separated key=value labels (default: the enrolled ones)."),
    state_dir: Path | None = typer.Option(
        None, help="Where slots and local state live (default: SLMOPS_AGENT_STATE_DIR, else .slmops/devices)."
    ),
    http_port: int | None = typer.Option(
        None,
        help="Local inference endpoint on 127.0.0.1: 0 = any free port, -1 = off "
        "(default: SLMOPS_AGENT_HTTP_PORT, else 8470).",
    ),
    heartbeat: float | None = typer.Option(
        None, help="Seconds between hellos (default: SLMOPS_AGENT_HEARTBEAT_SECONDS, else 30)."
    ),
    telemetry: float | None = typer.Option(
        None, help="Seconds per telemetry window (default: SLMOPS_AGENT_TELEMETRY_SECONDS, else 10)."
    ),
    rate_limit: int | None = typer.Option(None, help="Download rate limit in bytes/s (slow links, tests)."),
    arch: str | None = typer.Option(None, help="Override the detected architecture."),
    ram_mb: int | None = typer.Option(None, help="Override the detected RAM (MiB)."),
) -> None:
    """Follow this device's desired model: download, verify, switch slots, serve, report.

    Options left out come from the environment (`SLMOPS_AGENT_*`, services/edge_agent/settings.py).
    """
    from pydantic import ValidationError

    from services.edge_agent import identity
    from services.edge_agent.agent import AgentConfig, hello
    from services.edge_agent.capabilities import detect
    from services.edge_agent.settings import AgentSettings
    from shared.settings import load_settings

    try:
        settings = load_settings(AgentSettings)
    except ValidationError as exc:
        fail(f"invalid SLMOPS_AGENT_* settings: {exc}")
    directory = identity_dir or settings.agent_identity_dir
    if directory is None:
        fail("no identity: enroll this device (slmops device enroll ID --out DIR) and pass --identity DIR")
    try:
        enrolled, creds, registry_key = identity.load(directory)
    except identity.IdentityError as exc:
        fail(str(exc))
    if device_id is not None and device_id != enrolled.device_id:
        fail(f"--device-id {device_id} is not the enrolled id {enrolled.device_id} (its credentials speak for that id)")
    settings = settings.model_copy(update={"nats_creds": creds})
    config = AgentConfig(
        device_id=enrolled.device_id,
        device_class=device_class or enrolled.device_class,
        registry_key_pem=registry_key,
        labels=parse_labels([p.strip() for p in labels.split(",") if p.strip()], option="--labels")
        if labels is not None
        else enrolled.labels,
        state_dir=state_dir or settings.agent_state_dir,
        heartbeat_seconds=heartbeat or settings.agent_heartbeat_seconds,
        telemetry_seconds=telemetry or settings.agent_telemetry_seconds,
        download_attempts=settings.agent_download_attempts,
        download_rate_limit_bps=rate_limit or settings.agent_download_rate_limit_bps,
    )
    port = settings.agent_http_port if http_port is None else http_port
    try:  # validate id, class and labels the way the platform will, before connecting
        caps = detect(arch=arch, ram_mb=ram_mb)
        hello(config, caps, active_digest=None)
    except ValueError as exc:
        fail(f"invalid device settings: {exc}")
    run(_run_agent(config, caps, settings, http_port=port))


async def _run_agent(config: AgentConfig, caps: Capabilities, settings: AgentSettings, *, http_port: int) -> None:
    provider = _install_tracing(settings, service="agent")
    try:
        await _serve_agent(config, caps, settings, http_port=http_port)
    finally:
        if provider is not None:
            provider.shutdown()  # export the spans still batched


async def _serve_agent(config: AgentConfig, caps: Capabilities, settings: AgentSettings, *, http_port: int) -> None:
    import asyncio

    from services.edge_agent.agent import Agent
    from services.edge_agent.http_api import HttpLimits, serve
    from services.edge_agent.link import DeviceLink
    from shared import bus

    nc = await bus.connect(settings, name=f"slmops-agent-{config.device_id}")
    device = Agent(config, link=DeviceLink(nc, device_id=config.device_id), capabilities=caps)
    limits = HttpLimits.from_settings(settings)  # SLMOPS_AGENT_HTTP_MAX_*: settings only, no options
    server = serve(device, port=http_port, limits=limits) if http_port >= 0 else None
    if server:
        console.print(f"device {config.device_id}: inference on http://127.0.0.1:{server.server_address[1]}/v1/infer")
    task = asyncio.create_task(device.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if server:
        server.shutdown()
    await nc.close()


def _install_tracing(settings: Settings, *, service: str) -> TracerProvider | None:
    """The process's tracer provider for `service`, installed; None when tracing is off.

    Also None, with a warning, when this installation lacks the OpenTelemetry SDK or the exporter
    the settings name (an install older or slimmer than `slmops[agent]`): a device that cannot
    trace still installs and serves.
    """
    if settings.otel_exporter == "none":
        return None
    try:
        from shared.tracing import setup_tracing

        return setup_tracing(settings, service=service)
    except ModuleNotFoundError as exc:
        err_console.print(f"[yellow]tracing off:[/] {exc.name} is not installed (SLMOPS_OTEL_EXPORTER=none hides this)")
        return None


# --- slmops device enroll|revoke ------------------------------------------------------------------


@device_app.command("enroll")
def enroll(
    device_id: str = typer.Argument(..., help="The device's id ([A-Za-z0-9_-], max 64): its subjects and KV key."),
    device_class: str = typer.Option(..., "--class", help="Fleet class, e.g. rpi5, jetson, gateway."),
    labels: str = typer.Option("", help="Comma-separated key=value labels, e.g. site=berlin,line=3."),
    out: Path | None = typer.Option(None, help="Where to write the identity (default: <home>/devices/<id>)."),
    rotate: bool = typer.Option(False, help="Re-enrol an enrolled device: new credentials, the old ones revoked."),
    as_json: bool = JsonOption,
) -> None:
    """Issue DEVICE_ID its own NATS credentials and pin the registry's key: copy the directory to the
    device and run `slmops agent --identity DIR` there. Needs this deployment's keys (<home>/auth)."""
    from services.edge_agent import identity
    from shared.errors import SlmopsError
    from shared.settings import load_settings

    settings = load_settings()
    parsed = parse_labels([p.strip() for p in labels.split(",") if p.strip()], option="--labels")
    try:  # the id and class the device's hellos will carry, checked before anything is issued
        identity.DeviceIdentity(device_id=device_id, device_class=device_class, labels=parsed, registry_key_id="-")
    except ValueError as exc:
        fail(f"invalid device: {exc}")
    key_file = settings.signing_key_file.with_suffix(".pub")
    if not key_file.exists():
        fail(f"no registry public key at {key_file}: start the platform first (slmops up / slmops stack init)")
    authority = authority_at(settings.auth_dir)
    target = out or settings.home / "devices" / device_id
    try:
        current = authority.identity("device", device_id)
        if rotate and current is not None and current.active:
            _revoke(settings, authority, device_id)
        enrolled = identity.enroll(
            authority,
            target,
            device_id=device_id,
            device_class=device_class,
            labels=parsed,
            registry_key_pem=key_file.read_text(),
        )
    except (SlmopsError, ValueError) as exc:
        fail(str(exc))
    result = {"device_id": device_id, "identity": str(target), "registry_key_id": enrolled.registry_key_id}
    if as_json:
        print_json(result)
    else:
        console.print(f"enrolled {device_id}: identity in {target} (run: slmops agent --identity {target})")


@device_app.command("revoke")
def revoke(device_id: str = typer.Argument(...), as_json: bool = JsonOption) -> None:
    """Withdraw DEVICE_ID's credentials: the server disconnects it now and refuses it from then on."""
    from shared.errors import SlmopsError
    from shared.settings import load_settings

    settings = load_settings()
    authority = authority_at(settings.auth_dir)
    try:
        revoked, pushed = _revoke(settings, authority, device_id)
    except SlmopsError as exc:
        fail(str(exc))
    if as_json:
        print_json({"device_id": device_id, "revoked_at": revoked, "pushed": pushed})
    else:
        console.print(
            f"revoked {device_id}"
            + ("" if pushed else " (the server is not running: it takes the revocation when it starts)")
        )


def _revoke(settings: Settings, authority: Any, device_id: str) -> tuple[str, bool]:
    """Revoke (on disk, so the next server start preloads it), then push it to the running server;
    (revoked at, whether the server took it now)."""
    import asyncio

    from shared.auth import updates

    revoked = authority.revoke("device", device_id)
    try:  # not `run`: a server that is down is an answer here, not a failure of the command
        asyncio.run(updates.push_account(settings.nats_url, authority))
    except updates.PushFailed:
        return str(revoked.revoked_at), False
    return str(revoked.revoked_at), True


# --- slmops device assign|status ---------------------------------------------------------------


@device_app.command("assign")
def assign(
    device_id: str = typer.Argument(...),
    model: str = typer.Argument(...),
    ref: str = typer.Argument("latest", help="Version, alias or 'latest'."),
    variant: str | None = typer.Option(
        None, help="A registered variant of that version, or 'base' (default: the best one for the device)."
    ),
    shadow: bool = typer.Option(False, help="Run the previous model in shadow and report agreement."),
    smoke: bool = typer.Option(True, help="Smoke-test on the version's evaluation set (when it has one)."),
    as_json: bool = JsonOption,
) -> None:
    """Assign DEVICE_ID a model: a one-device rollout, with a rollout's checks and its revert.

    The rollout service writes the device's desired state (it is the only writer); the device then
    downloads, verifies and switches on its own. `slmops rollout rollback ID` puts back what it had."""
    result = run(_assign(device_id, model, ref, variant, shadow, smoke))
    if as_json:
        print_json(result)
    else:
        console.print(
            f"{device_id} → {result['model']} {result['version']}"
            f"{' variant ' + result['variant'] if result['variant'] else ''} (rollout {result['rollout_id']})"
        )


async def _assign(
    device_id: str, model: str, ref: str, variant: str | None, shadow: bool, smoke: bool
) -> dict[str, Any]:
    import secrets

    from shared import bus, topology
    from shared.messages.rollout import Selector, StartRollout, Wave
    from shared.messages.rollout_record import RolloutRecord
    from shared.settings import load_settings

    try:
        cmd = StartRollout(
            rollout_id=f"assign-{secrets.token_hex(6)}",
            model=model,
            ref=ref,
            selector=Selector(device_ids=[device_id]),
            waves=[Wave(percent=100)],
            soak_seconds=0,
            variant=variant,
            shadow=shadow,
            smoke_test=smoke,
        )
    except ValueError as exc:
        fail(f"invalid device id, model or variant: {exc}")
    nc = await bus.connect(load_settings(), name="slmops-cli")
    try:
        _, outcome = await bus.send_command(nc, cmd, source=CLI_SOURCE, wait=30)
        if outcome is None:
            fail("the rollout service did not answer in 30 s (is it running? slmops status)")
        if outcome.status not in ("applied", "unchanged"):
            fail(outcome.reason or f"the assignment was {outcome.status}")
        kv = await nc.jetstream().key_value(topology.KV_ROLLOUTS)
        entry = await kv.get(cmd.rollout_id or "")
        record = RolloutRecord.model_validate_json(entry.value or b"")
    finally:
        await nc.close()
    (choice,) = record.artifacts
    return {
        "rollout_id": record.rollout_id,
        "device_id": device_id,
        "model": record.model,
        "version": record.version,
        "variant": choice.variant,
        "digest": choice.digest,
    }


@device_app.command("status")
def status(device_id: str = typer.Argument(...), as_json: bool = JsonOption) -> None:
    """The device's desired state and the last install step it reported."""
    desired, last = run(_status(device_id))
    if as_json:
        print_json({"desired": desired, "last_status": last})
        return
    if desired is None:
        console.print(f"{device_id} has no desired state")
    else:
        console.print(
            f"desired: {desired['model']} {desired['version']} {desired.get('variant') or ''} "
            f"sha256 {desired['digest'][:16]}…"
        )
    if last is None:
        console.print("no status reported yet")
    else:
        console.print(
            f"last step: {last['step']} (revision {last['desired_revision']})"
            + (f": {last['reason']}" if last.get("reason") else "")
        )


async def _status(device_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    import json

    from nats.js.errors import KeyNotFoundError, NotFoundError

    from shared import bus, subjects, topology
    from shared.settings import load_settings

    nc = await bus.connect(load_settings(), name="slmops-cli")
    try:
        js = nc.jetstream()
        try:
            entry = await (await js.key_value(topology.KV_DESIRED)).get(device_id)
            desired = json.loads(entry.value) if entry.value else None
        except KeyNotFoundError:
            desired = None
        try:
            msg = await js.get_last_msg(topology.DEVICE_STREAM, subjects.device_status(device_id))
            last = json.loads(msg.data or b"{}").get("data")
        except NotFoundError:
            last = None
    finally:
        await nc.close()
    return desired, last


# --- slmops fleet simulate ---------------------------------------------------------------------


@fleet_app.callback()
def fleet() -> None:
    """Simulated device fleets on the real device protocol (a group, so `fleet simulate` stays a verb)."""


@fleet_app.command()
def simulate(
    devices: int = typer.Option(100, "--devices", "-n", help="Number of simulated devices."),
    mix: str = typer.Option(DEFAULT_MIX, help="Device classes and their relative weights."),
    faults: str = typer.Option("", help=FAULTS_HELP),
    real_inference: int | None = typer.Option(
        None,
        help="Devices that run real onnxruntime inference (default min(devices, 50)); the rest draw "
        "their telemetry from per-artifact measurements on this host.",
    ),
    connections: int | None = typer.Option(None, help="NATS connections (default one per 500 devices, at most 32)."),
    duration: float = typer.Option(60.0, help="Seconds to run; 0 = until Ctrl-C."),
    heartbeat: float = typer.Option(30.0, help="Seconds between a device's hellos."),
    window: float = typer.Option(30.0, help="Seconds per telemetry window."),
    rate: float = typer.Option(1.0, help="Inference requests per second per device."),
    id_prefix: str = typer.Option("sim", help="Device ids are PREFIX-<index>."),
    offline_after: float = typer.Option(5.0, help="offline fault: seconds after start before dropping off."),
    offline_for: float = typer.Option(20.0, help="offline fault: seconds away."),
    share_download_urls: bool = typer.Option(
        True, help="Devices on one connection reuse a presigned URL per digest (half its TTL)."
    ),
    input_shift_after: float | None = typer.Option(
        None,
        help="Seconds after the start from which some devices' inputs shift (token ids from a narrow band "
        "of the vocabulary): their telemetry comes from real inference on those inputs. Default: never.",
    ),
    input_shift_share: float = typer.Option(
        0.5, help="Share of the devices whose inputs shift (with --input-shift-after)."
    ),
    seed: int = typer.Option(0, help="Seed for class/fault assignment and every random draw."),
    as_json: bool = JsonOption,
) -> None:
    """Run N simulated devices that follow their desired state, install, report and send telemetry."""
    from services.edge_agent.fleet.classes import load_classes
    from services.edge_agent.fleet.config import SimulationConfig
    from services.edge_agent.fleet.errors import FleetConfigError
    from services.edge_agent.fleet.faults import parse_faults
    from services.edge_agent.fleet.mix import parse_mix

    try:
        config = SimulationConfig(
            devices=devices,
            mix=parse_mix(mix, load_classes()),
            faults=parse_faults(faults),
            connections=connections,
            real_inference=real_inference,
            id_prefix=id_prefix,
            heartbeat_seconds=heartbeat,
            window_seconds=window,
            request_rate=rate,
            offline_after=offline_after,
            offline_for=offline_for,
            share_download_urls=share_download_urls,
            input_shift_after=input_shift_after,
            input_shift_share=input_shift_share,
            seed=seed,
        )
    except FleetConfigError as exc:
        fail(str(exc), code=2)
    if duration < 0:
        fail("--duration cannot be negative", code=2)
    report = run(_simulate(config, duration=duration, quiet=as_json))
    if as_json:
        print_json(report.model_dump(mode="json"))
        return
    from services.edge_agent.render import report_tables

    console.print(report_tables(report))


async def _simulate(config: SimulationConfig, *, duration: float, quiet: bool) -> FleetReport:
    import asyncio

    from rich.live import Live

    from services.edge_agent.fleet.simulator import FleetSimulator
    from services.edge_agent.render import progress_line
    from shared.settings import load_settings

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    settings = load_settings()
    simulator_creds = settings.auth_dir / "creds" / "simulator-fleet.creds"
    if settings.nats_creds is None and simulator_creds.exists():
        # The simulator speaks for many devices: its own identity, never the operator's (SECURITY.md).
        settings = settings.model_copy(update={"nats_creds": simulator_creds})
    provider = _install_tracing(settings, service="fleet")
    try:
        async with FleetSimulator(settings, config) as sim:
            deadline = loop.time() + duration if duration else None
            live = Live(console=console, transient=True, refresh_per_second=2)
            with live if not quiet else contextlib.nullcontext():
                while not stop.is_set() and (deadline is None or loop.time() < deadline):
                    live.update(progress_line(sim))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=1.0)
            return sim.report()
    finally:
        if provider is not None:
            provider.shutdown()  # export the spans still batched
