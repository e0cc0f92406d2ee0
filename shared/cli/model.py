"""`slmops model push|list|show|alias|sample`: the registry from the command line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer

from shared import bus
from shared.artifacts import ArtifactStore
from shared.cli import render
from shared.cli.common import CLI_SOURCE, JsonOption, console, fail, print_json, run
from shared.messages.common import CommandOutcome, ObjectRef
from shared.messages.registry import (
    AliasRecord,
    GetAliases,
    GetModel,
    ListModels,
    ModelDetail,
    ModelSummary,
    RegisterModel,
    SetAlias,
)
from shared.sample_models import write_sample
from shared.settings import Settings, load_settings

model_app = typer.Typer(help="Register and inspect model versions.", no_args_is_help=True)


def _labels(values: list[str]) -> dict[str, str]:
    labels = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--label wants key=value, got {item!r}")
        labels[key] = value
    return labels


@model_app.command("push")
def push(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="The .onnx file."),
    name: str = typer.Option(..., "--name", "-n", help="Model name (lowercase, digits, '-', '_')."),
    version: str = typer.Option(..., "--version", "-v", help="Version, e.g. 1.0.0; immutable once registered."),
    eval_set: Path | None = typer.Option(
        None, "--eval-set", exists=True, dir_okay=False, help=".npz keyed by input names."
    ),
    label: list[str] = typer.Option([], "--label", "-l", help="key=value, repeatable."),
    description: str = typer.Option("", help="Free text stored with the version."),
    wait: float = typer.Option(120.0, help="Seconds to wait for the registry's verdict."),
    as_json: bool = JsonOption,
) -> None:
    """Upload FILE and register it as NAME VERSION; prints the registry's verdict."""
    try:
        cmd = RegisterModel(
            name=name,
            version=version,
            artifact=ObjectRef(key="pending"),
            labels=_labels(label),
            description=description,
        )
    except ValueError as exc:
        fail(f"invalid model name or version: {exc}")
    outcome = run(_push(load_settings(), cmd, file, eval_set, wait))
    if as_json:
        print_json(outcome.model_dump(mode="json"))
    elif outcome.status == "rejected":
        pass
    else:
        verb = "registered" if outcome.status == "applied" else "already registered (same bytes)"
        console.print(f"[green]{name} {version} {verb}[/] sha256 {outcome.result.get('digest', '')}")
    if outcome.status == "rejected":
        fail(f"registry rejected {name} {version}: {outcome.reason}")


async def _push(
    settings: Settings, cmd: RegisterModel, file: Path, eval_set: Path | None, wait: float
) -> CommandOutcome:
    store = ArtifactStore.from_settings(settings)
    uploaded = [await asyncio.to_thread(store.upload_staging, file)]
    if eval_set is not None:
        uploaded.append(await asyncio.to_thread(store.upload_staging, eval_set))
    cmd = cmd.model_copy(
        update={
            "artifact": ObjectRef(key=uploaded[0].key),
            "eval_set": ObjectRef(key=uploaded[1].key) if eval_set is not None else None,
        }
    )
    try:
        nc = await bus.connect(settings, name="slmops-cli")
    except bus.BusError:
        for obj in uploaded:  # the command never left: do not leave its uploads behind
            await asyncio.to_thread(store.delete, obj.key)
        raise
    try:
        command_id, outcome = await bus.send_command(nc, cmd, source=CLI_SOURCE, wait=wait)
    finally:
        await nc.close()
    if outcome is None:
        fail(
            f"the command {command_id} is queued but the registry gave no verdict within {wait:.0f}s; "
            f"check later with `slmops model show {cmd.name} {cmd.version}`"
        )
    return outcome


@model_app.command("list")
def list_models(name: str | None = typer.Argument(None, help="Only this model."), as_json: bool = JsonOption) -> None:
    """Registered models, their versions and aliases."""
    result = run(_request("list", ListModels(name=name)))
    models = [ModelSummary.model_validate(m) for m in result]
    if as_json:
        print_json([m.model_dump(mode="json") for m in models])
    elif not models:
        console.print("no models registered.")
    else:
        console.print(render.model_list(models))


@model_app.command("show")
def show(
    name: str = typer.Argument(...),
    ref: str = typer.Argument("latest", help="A version, an alias, or 'latest'."),
    as_json: bool = JsonOption,
) -> None:
    """Everything about one version: ONNX facts, digest, signature, eval set, variants, aliases."""
    detail = ModelDetail.model_validate(run(_request("get", GetModel(name=name, ref=ref))))
    if as_json:
        print_json(detail.model_dump(mode="json"))
    else:
        console.print(render.model_detail(detail))


@model_app.command("alias")
def alias(
    name: str = typer.Argument(...),
    alias_name: str | None = typer.Argument(None, metavar="[ALIAS]", help="Alias to set, e.g. stable."),
    version: str | None = typer.Argument(None, metavar="[VERSION]", help="Version the alias should point at."),
    wait: float = typer.Option(30.0, help="Seconds to wait for the registry's verdict."),
    as_json: bool = JsonOption,
) -> None:
    """With ALIAS and VERSION, point the alias at the version; with NAME alone, list aliases and history."""
    if alias_name is None:
        records = [AliasRecord.model_validate(a) for a in run(_request("aliases", GetAliases(name=name)))]
        if as_json:
            print_json([r.model_dump(mode="json") for r in records])
        else:
            console.print(render.alias_history(records) if records else f"{name} has no aliases.")
        return
    if version is None:
        fail("give both ALIAS and VERSION to set an alias, or neither to list them")
    try:
        cmd = SetAlias(name=name, alias=alias_name, version=version)
    except ValueError as exc:
        fail(f"invalid alias command: {exc}")
    outcome = run(_command(cmd, wait))
    if as_json:
        print_json(outcome.model_dump(mode="json"))
    if outcome.status == "rejected":
        fail(f"registry rejected the alias: {outcome.reason}")
    if not as_json:
        console.print(f"[green]{name}:{alias_name} → {version}[/] ({outcome.status})")


@model_app.command("sample")
def sample(
    directory: Path = typer.Argument(Path("."), help="Where to write the files."),
    minilm: bool = typer.Option(
        False, "--minilm", help="The reference SLM, all-MiniLM-L6-v2 (90 MB), instead of the tiny model."
    ),
) -> None:
    """Write a model and its evaluation set to try things with: the tiny built-in one, or MiniLM."""
    if minilm:
        from shared.minilm import MiniLMError, write_minilm

        try:
            model_path, eval_path = write_minilm(directory)
        except MiniLMError as exc:
            fail(str(exc))
    else:
        model_path, eval_path = write_sample(directory)
    console.print(f"wrote {model_path} and {eval_path}")


async def _request(operation: str, payload: ListModels | GetModel | GetAliases) -> Any:
    nc = await bus.connect(load_settings(), name="slmops-cli")
    try:
        return await bus.request(nc, "registry", operation, payload, source=CLI_SOURCE)
    finally:
        await nc.close()


async def _command(payload: SetAlias, wait: float) -> CommandOutcome:
    nc = await bus.connect(load_settings(), name="slmops-cli")
    try:
        command_id, outcome = await bus.send_command(nc, payload, source=CLI_SOURCE, wait=wait)
    finally:
        await nc.close()
    if outcome is None:
        fail(f"the command {command_id} is queued but the registry gave no verdict within {wait:.0f}s")
    return outcome
