"""`slmops model push|list|show|alias|sample`: the registry from the command line.

Commands call the typed client (`shared.clients.RegistryClient`) and render what it returns; the
imports that need NATS, S3 or onnx happen inside the commands, so `slmops --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer

from shared.cli.common import CLI_SOURCE, JsonOption, console, fail, parse_labels, print_json, run

if TYPE_CHECKING:
    from shared.clients import RegistryClient
    from shared.messages.common import CommandOutcome
    from shared.messages.registry import RegisterModel, SetAlias
    from shared.settings import Settings

T = TypeVar("T")
model_app = typer.Typer(help="Register and inspect model versions.", no_args_is_help=True)


@model_app.command("push")
def push(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="The .onnx file."),
    name: str = typer.Option(..., "--name", "-n", help="Model name (lowercase, digits, '-', '_')."),
    version: str = typer.Option(
        ...,
        "--version",
        "-v",
        help="Version, e.g. 1.0.0: starts with a digit (names starting with a letter are aliases); immutable.",
    ),
    eval_set: Path | None = typer.Option(
        None, "--eval-set", exists=True, dir_okay=False, help=".npz keyed by input names."
    ),
    label: list[str] = typer.Option([], "--label", "-l", help="key=value, repeatable."),
    description: str = typer.Option("", help="Free text stored with the version."),
    alias_name: list[str] = typer.Option(
        [],
        "--alias",
        "-a",
        help="Once registered, point this alias at the version (repeatable): e.g. candidate, which a "
        "blueprint tracking it rolls out.",
    ),
    wait: float = typer.Option(120.0, help="Seconds to wait for the registry's verdict."),
    as_json: bool = JsonOption,
) -> None:
    """Upload FILE and register it as NAME VERSION; prints the registry's verdict."""
    from shared.messages.common import ObjectRef
    from shared.messages.registry import RegisterModel, SetAlias
    from shared.settings import load_settings

    try:
        cmd = RegisterModel(
            name=name,
            version=version,
            artifact=ObjectRef(key="pending"),
            labels=parse_labels(label, option="--label"),
            description=description,
        )
        aliases = [SetAlias(name=name, alias=a, version=version) for a in alias_name]
    except ValueError as exc:
        fail(f"invalid model name, version, labels, description or alias: {exc}")
    outcome = run(_push(load_settings(), cmd, file, eval_set, wait))
    moved = [run(_set_alias(a, wait)) for a in aliases] if outcome.status != "rejected" else []
    if as_json:
        print_json(outcome.model_dump(mode="json") | {"aliases": [m.model_dump(mode="json") for m in moved]})
    elif outcome.status != "rejected":
        verb = "registered" if outcome.status == "applied" else "already registered (same bytes)"
        console.print(f"[green]{name} {version} {verb}[/] sha256 {outcome.result.get('digest', '')}")
    if outcome.status == "rejected":
        fail(f"registry rejected {name} {version}: {outcome.reason}")
    for alias_cmd, alias_outcome in zip(aliases, moved, strict=True):
        if alias_outcome.status == "rejected":
            fail(f"registry rejected the alias {alias_cmd.alias}: {alias_outcome.reason}")
        if not as_json:
            console.print(f"[green]{name}:{alias_cmd.alias} → {version}[/] ({alias_outcome.status})")


async def _push(
    settings: Settings, cmd: RegisterModel, file: Path, eval_set: Path | None, wait: float
) -> CommandOutcome:
    import asyncio

    from shared import bus
    from shared.artifacts import ArtifactStore
    from shared.clients import RegistryClient
    from shared.messages.common import ObjectRef

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
        command_id, outcome = await RegistryClient(nc, source=CLI_SOURCE).submit(cmd, wait=wait)
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
    from services.registry import render

    models = run(_with_registry(lambda registry: registry.list_models(name)))
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
    from services.registry import render

    detail = run(_with_registry(lambda registry: registry.get_model(name, ref)))
    if as_json:
        print_json(detail.model_dump(mode="json"))
    else:
        console.print(render.model_detail(detail))


@model_app.command("alias")
def alias(
    name: str = typer.Argument(...),
    alias_name: str | None = typer.Argument(
        None, metavar="[ALIAS]", help="Alias to set, e.g. stable: starts with a letter; 'latest' is reserved."
    ),
    version: str | None = typer.Argument(None, metavar="[VERSION]", help="Version the alias should point at."),
    wait: float = typer.Option(30.0, help="Seconds to wait for the registry's verdict."),
    as_json: bool = JsonOption,
) -> None:
    """With ALIAS and VERSION, point the alias at the version; with NAME alone, list aliases and history."""
    from services.registry import render
    from shared.messages.registry import SetAlias

    if alias_name is None:
        records = run(_with_registry(lambda registry: registry.aliases(name)))
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
    outcome = run(_set_alias(cmd, wait))
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
    dim: int = typer.Option(
        64, "--dim", min=8, max=2048, help="The tiny model's width: larger is slower (dim² per token)."
    ),
    seed: int = typer.Option(
        0, "--seed", min=0, help="The tiny model's weights: another seed is a retrained version, as fast."
    ),
) -> None:
    """Write a model and its evaluation set to try things with: the tiny built-in one, or MiniLM."""
    if minilm:
        from samples.minilm import MiniLMError, write_minilm

        try:
            model_path, eval_path = write_minilm(directory)
        except MiniLMError as exc:
            fail(str(exc))
    else:
        from samples.tiny import write_sample

        model_path, eval_path = write_sample(directory, dim=dim, seed=seed)
    console.print(f"wrote {model_path} and {eval_path}")


async def _with_registry(query: Callable[[RegistryClient], Awaitable[T]]) -> T:
    from shared import bus
    from shared.clients import RegistryClient
    from shared.settings import load_settings

    nc = await bus.connect(load_settings(), name="slmops-cli")
    try:
        return await query(RegistryClient(nc, source=CLI_SOURCE))
    finally:
        await nc.close()


async def _set_alias(cmd: SetAlias, wait: float) -> CommandOutcome:
    command_id, outcome = await _with_registry(lambda registry: registry.submit(cmd, wait=wait))
    if outcome is None:
        fail(f"the command {command_id} is queued but the registry gave no verdict within {wait:.0f}s")
    return outcome
