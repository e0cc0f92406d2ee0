"""`slmops apply|diff -f` refuse what a file alone can tell before they connect, with the file, document
and field of every problem; what they send and how they exit (services/blueprints/cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from services.blueprints import cli
from shared.messages.blueprint import Blueprint
from shared.messages.blueprint_api import AppliedBlueprint, ApplyResult, DeviceGroupChange, TargetArtifact

HEAD = "apiVersion: slmops.dev/v1\nkind: Blueprint\n"


def doc(name: str, spec: str = "{model: tiny-embedder, track: stable}") -> str:
    return HEAD + f"metadata: {{name: {name}}}\nspec: {spec}\n"


# `apply` and `diff` are single commands (the root CLI adds them by entry point): an app to invoke them.
app = typer.Typer()
app.command("apply")(cli.apply)
app.command("diff")(cli.diff)
app.add_typer(cli.blueprint_app, name="blueprint")


class Service:
    """Stands in for the blueprints service: records each apply and answers `groups`."""

    def __init__(self, groups: list[DeviceGroupChange] | None = None, action: str = "created") -> None:
        self.calls: list[dict[str, Any]] = []
        self.groups = groups or []
        self.action = action

    async def __call__(self, blueprints: list[Blueprint], *, dry_run: bool, source_file: str) -> ApplyResult:
        self.calls.append({"names": [b.name for b in blueprints], "dry_run": dry_run, "source": source_file})
        applied = [AppliedBlueprint(name=b.name, action=self.action, generation=1) for b in blueprints]  # type: ignore[arg-type]
        return ApplyResult(dry_run=dry_run, blueprints=applied, groups=self.groups)


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> Service:
    fake = Service()
    monkeypatch.setattr(cli, "_apply", fake)
    return fake


@pytest.fixture(autouse=True)
def nothing_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMOPS_NATS_URL", "nats://127.0.0.1:1")  # a command that connects fails loudly


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), input=stdin)
    return result.exit_code, " ".join(result.output.split())


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_an_invalid_file_fails_with_the_document_and_field_path_before_connecting(
    tmp_path: Path, service: Service
) -> None:
    bad = write(tmp_path, "fleet.yaml", doc("demo", "{model: tiny-embedder, track: stable, rollout: {waves: [50]}}"))
    code, output = invoke("apply", "-f", bad)
    assert code == 1
    assert f"{bad}, document 1 (demo): spec.rollout.waves:" in output and "nothing was applied" in output
    assert service.calls == []


def test_every_problem_of_every_file_is_printed(tmp_path: Path, service: Service) -> None:
    one = write(tmp_path, "one.yaml", doc("a", "{model: tiny-embedder}"))
    two = write(tmp_path, "two.yaml", "key: [unclosed")
    code, output = invoke("apply", "-f", one, "-f", two)
    assert code == 1 and "2 problems" in output
    assert f"{one}, document 1 (a): spec.track:" in output and f"{two}: not YAML" in output
    assert service.calls == []


def test_one_name_in_two_files_is_refused_naming_both(tmp_path: Path, service: Service) -> None:
    one = write(tmp_path, "one.yaml", doc("demo"))
    two = write(tmp_path, "two.yaml", doc("other") + "---\n" + doc("demo"))
    code, output = invoke("apply", "-f", one, "-f", two)
    assert code == 1
    assert f"{two}: blueprint 'demo' is also in {one}" in output
    assert service.calls == []


@pytest.mark.parametrize(
    ("files", "said"),
    [
        (["-", "-"], "-: given twice (standard input can be read once)"),
        (["missing.yaml"], "missing.yaml: cannot read it: No such file or directory"),
        (["."], ".: a directory; give its files"),
    ],
)
def test_files_that_cannot_be_read_are_named(files: list[str], said: str, service: Service) -> None:
    code, output = invoke("apply", *[arg for f in files for arg in ("-f", f)], stdin=doc("demo"))
    assert code == 1 and said in output
    assert service.calls == []


def test_a_file_is_required() -> None:
    code, output = invoke("apply")
    assert code == 2 and "--filename" in output


def test_apply_reads_standard_input_and_sends_every_blueprint_in_file_order(tmp_path: Path, service: Service) -> None:
    other = write(tmp_path, "other.yaml", doc("zeta"))
    code, output = invoke("apply", "-f", "-", "-f", other, stdin=doc("demo") + "---\n" + doc("alpha"))
    assert code == 0, output
    assert service.calls == [{"names": ["demo", "alpha", "zeta"], "dry_run": False, "source": f"<stdin>, {other}"}]
    assert "blueprint/demo created (generation 1)" in output and "no device will change" in output


def test_diff_asks_for_a_dry_run_and_exits_0_even_when_something_would_change(service: Service) -> None:
    code, output = invoke("diff", "-f", "-", stdin=doc("demo"))
    assert code == 0, output
    assert service.calls[0]["dry_run"] is True
    assert "blueprint/demo created (generation 1) (dry run)" in output


def changing() -> DeviceGroupChange:
    after = TargetArtifact(model="tiny-embedder", version="1.1.0", profile=None, settings=None)
    return DeviceGroupChange(
        blueprint="demo", device_class="rpi5", before=None, after=after, reason="new blueprint", count=2, devices=[]
    )


@pytest.mark.parametrize(
    ("groups", "action", "code"),
    [([], "unchanged", 0), ([changing()], "unchanged", 1), ([], "configured", 1)],
)
def test_diff_exit_code_answers_whether_something_would_change(
    groups: list[DeviceGroupChange], action: str, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "_apply", Service(groups, action=action))
    assert invoke("diff", "--exit-code", "-f", "-", stdin=doc("demo"))[0] == code


def test_diff_exit_code_tells_an_error_from_a_difference(service: Service) -> None:
    code, output = invoke("diff", "--exit-code", "-f", "-", stdin="kind: Blueprint\n")
    assert code == 2 and "nothing was compared" in output


def test_json_prints_the_reply(service: Service) -> None:
    import json

    result = CliRunner().invoke(app, ["apply", "-f", "-", "--json"], input=doc("demo"))
    assert result.exit_code == 0
    assert json.loads(result.output)["blueprints"] == [{"name": "demo", "action": "created", "generation": 1}]


@pytest.mark.parametrize("verb", ["show", "delete"])
def test_a_name_that_cannot_be_a_blueprint_s_fails_before_connecting(verb: str) -> None:
    code, output = invoke("blueprint", verb, "Not/A Name")
    assert code == 1 and "'Not/A Name' is not a blueprint name" in output


def test_a_long_list_of_files_is_named_by_the_first_and_a_count() -> None:
    files = [f"/some/long/directory/name/fleet-{i:03}.yaml" for i in range(20)]
    label = cli.source_label(files)
    assert len(label) <= cli.MAX_SOURCE_CHARS and label.endswith("and 19 more files")
    assert cli.source_label(["a.yaml", "b.yaml"]) == "a.yaml, b.yaml"
