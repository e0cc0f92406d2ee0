"""`slmops device assign|status`: set a device's desired model by hand, and see where it is.

Assigning by hand is what the rollout service does at scale (one KV write per device); doing it
for one device is how you try a model on a bench device, as hawkBit's or Mender's manual
assignment does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import typer
from nats.js.errors import KeyNotFoundError, NotFoundError

from shared import bus, subjects, topology
from shared.cli.common import CLI_SOURCE, JsonOption, console, fail, print_json, run
from shared.messages.device import DesiredState, SmokeInput
from shared.messages.registry import GetModel, ModelDetail
from shared.settings import load_settings

device_app = typer.Typer(help="Devices: assign a model by hand, show install status.", no_args_is_help=True)


@device_app.command("assign")
def assign(
    device_id: str = typer.Argument(...),
    model: str = typer.Argument(...),
    ref: str = typer.Argument("latest", help="Version, alias or 'latest'."),
    variant: str | None = typer.Option(None, help="A registered variant of that version (default: the base)."),
    shadow: bool = typer.Option(False, help="Run the previous model in shadow and report agreement."),
    smoke: bool = typer.Option(True, help="Smoke-test on the version's evaluation set (when it has one)."),
    as_json: bool = JsonOption,
) -> None:
    """Write DEVICE_ID's desired state: the device downloads, verifies and switches on its own."""
    result = run(_assign(device_id, model, ref, variant, shadow, smoke))
    if as_json:
        print_json(result)
    else:
        console.print(
            f"{device_id} → {result['model']} {result['version']}"
            f"{' variant ' + result['variant'] if result['variant'] else ''} (revision {result['revision']})"
        )


async def _assign(
    device_id: str, model: str, ref: str, variant: str | None, shadow: bool, smoke: bool
) -> dict[str, Any]:
    nc = await bus.connect(load_settings(), name="slmops-cli")
    try:
        detail = ModelDetail.model_validate(
            await bus.request(nc, "registry", "get", GetModel(name=model, ref=ref), source=CLI_SOURCE)
        )
        artifact = detail.version.artifact
        if variant is not None:
            match = [v for v in detail.variants if v.variant == variant]
            if not match:
                known = ", ".join(v.variant for v in detail.variants) or "none"
                fail(f"{model} {detail.version.version} has no variant {variant!r}; variants: {known}")
            artifact = match[0].artifact
        try:
            state = DesiredState(
                device_id=device_id,
                model=model,
                version=detail.version.version,
                variant=variant,
                digest=artifact.digest,
                size_bytes=artifact.size_bytes,
                signature=artifact.signature,
                shadow=shadow,
                issued_at=datetime.now(UTC),
                smoke_input=SmokeInput(digest=eval_set.digest, size_bytes=eval_set.size_bytes)
                if smoke and (eval_set := detail.version.eval_set)
                else None,
            )
        except ValueError as exc:
            fail(f"invalid device id or model: {exc}")
        kv = await nc.jetstream().key_value(topology.KV_DESIRED)
        revision = await kv.put(device_id, state.model_dump_json().encode())
    finally:
        await nc.close()
    return {**state.model_dump(mode="json"), "revision": revision}


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
