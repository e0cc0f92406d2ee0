"""What `slmops apply|diff|blueprint list|show` print (services/blueprints/render.py), from reply models alone."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console, RenderableType

from services.blueprints.load import load_blueprints
from services.blueprints.render import (
    applied_line,
    apply_view,
    blueprint_view,
    blueprints_table,
    document_yaml,
    groups_table,
    lost_lines,
    running_cell,
    status_view,
    target_cell,
    unchanged_line,
    would_change,
)
from shared.messages.blueprint_api import (
    AppliedBlueprint,
    ApplyResult,
    BlueprintDetail,
    BlueprintStatus,
    BlueprintSummary,
    DeviceGroupChange,
    OptimizationRecord,
    RunningArtifact,
    StartedRollout,
    StoredBlueprint,
    TargetArtifact,
)

from .factories import T0, blueprint

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "examples" / "blueprint.yaml"
MODEL = "tiny-embedder"
SETTINGS = "ab" * 32
V1_RPI5 = RunningArtifact(model=MODEL, version="1.0.0", variant="int8", profile="rpi5")
V2_RPI5 = TargetArtifact(model=MODEL, version="1.1.0", profile="rpi5", settings=None)


def text(*parts: RenderableType) -> str:
    console = Console(width=250, record=True)
    for part in parts:
        console.print(part)
    return console.export_text()


def group(reason: str, count: int = 1, **fields: Any) -> DeviceGroupChange:
    values: dict[str, Any] = {
        "blueprint": "demo",
        "override": None,
        "device_class": "rpi5",
        "before": V1_RPI5,
        "after": V2_RPI5,
        "reason": reason,
        "count": count,
        "devices": [f"r{i}" for i in range(min(count, 50))],
    }
    return DeviceGroupChange(**(values | fields))


def result(*groups: DeviceGroupChange, action: str = "configured", dry_run: bool = True, **fields: Any) -> ApplyResult:
    applied = [AppliedBlueprint(name="demo", action=action, generation=2)]  # type: ignore[arg-type]
    return ApplyResult(dry_run=dry_run, blueprints=applied, groups=list(groups), **fields)


def stored(name: str = "demo", generation: int = 2) -> StoredBlueprint:
    return StoredBlueprint(blueprint=blueprint(name), generation=generation, digest="d" * 64, applied_at=T0)


@pytest.mark.parametrize(
    ("action", "dry_run", "line"),
    [
        ("created", False, "blueprint/demo created (generation 2)"),
        ("configured", True, "blueprint/demo configured (generation 2) (dry run)"),
        ("unchanged", False, "blueprint/demo unchanged"),
        ("deleted", False, "blueprint/demo deleted"),
    ],
)
def test_each_blueprint_s_action_reads_like_kubectl_apply(action: str, dry_run: bool, line: str) -> None:
    generation = 0 if action == "deleted" else 2
    assert applied_line(AppliedBlueprint(name="demo", action=action, generation=generation), dry_run=dry_run) == line  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("before", "cell"),
    [
        (None, "nothing"),
        (V1_RPI5, "tiny-embedder 1.0.0 int8, profile rpi5"),
        (RunningArtifact(model=MODEL, version="1.0.0", variant="base"), "tiny-embedder 1.0.0 base"),
    ],
)
def test_what_a_group_runs(before: RunningArtifact | None, cell: str) -> None:
    assert running_cell(before) == cell


@pytest.mark.parametrize(
    ("after", "before", "cell"),
    [
        (None, V1_RPI5, "keeps what it runs"),
        (V2_RPI5, V1_RPI5, "1.1.0, profile rpi5"),
        (V2_RPI5, None, "1.1.0, profile rpi5"),
        (V2_RPI5, RunningArtifact(model="minilm", version="3.0", variant="base"), "tiny-embedder 1.1.0, profile rpi5"),
        (TargetArtifact(model=MODEL, version="1.1.0", profile=None, settings=None), V1_RPI5, "1.1.0, best variant"),
        (TargetArtifact(model=MODEL, version=None, profile="rpi5", settings=None), V1_RPI5, "no version, profile rpi5"),
        (
            TargetArtifact(model=MODEL, version="1.0.0", profile="rpi5", settings=SETTINGS),
            V1_RPI5,
            "1.0.0, profile rpi5, settings abababababab",
        ),
    ],
)
def test_what_a_group_would_run_names_the_model_only_when_it_changes(
    after: TargetArtifact | None, before: RunningArtifact | None, cell: str
) -> None:
    assert target_cell(after, before) == cell


def test_a_group_row_has_override_class_count_from_to_and_why() -> None:
    row = group("pinned by override site-lab", 3, override="site-lab")
    shown = text(groups_table([row], title="t"))
    for cell in ("site-lab", "rpi5", "3", "tiny-embedder 1.0.0 int8, profile rpi5", "1.1.0, profile rpi5"):
        assert cell in shown
    assert "pinned by override site-lab" in shown
    assert "blueprint" not in shown, "one blueprint on every row: no column for it"


def test_the_owner_column_appears_when_groups_have_different_owners() -> None:
    rows = [group("new blueprint"), group("released (was demo)", blueprint=None, after=None)]
    shown = text(groups_table(rows, title="t"))
    assert "blueprint" in shown and "(none)" in shown and "demo" in shown
    assert "override" not in shown, "no group has an override: no column for it"


def test_a_reason_is_printed_as_written_not_read_as_markup() -> None:
    assert "runs another model ([bold]x)" in text(groups_table([group("runs another model ([bold]x)")], title="t"))


def test_diff_lists_the_changing_groups_and_sums_up_the_unchanged_ones_in_one_line() -> None:
    reply = result(
        group("track moved", 4),
        group("unchanged", 36),
        group("unchanged", 2, blueprint="edge", device_class="jetson"),
    )
    shown = text(*apply_view(reply))
    assert "blueprint/demo configured (generation 2) (dry run)" in shown
    assert "4 devices would change" in shown and "track moved" in shown
    assert shown.count("unchanged") == 1
    assert "38 devices in 2 groups unchanged (demo 36, edge 2)" in shown


def test_apply_says_what_will_change_and_when_nothing_does() -> None:
    assert "1 device will change" in text(*apply_view(result(group("new blueprint"), dry_run=False)))
    quiet = text(*apply_view(result(group("unchanged", 5), action="unchanged", dry_run=False)))
    assert "no device will change" in quiet and "5 devices in 1 group unchanged (demo 5)" in quiet


def test_groups_the_service_left_out_are_counted() -> None:
    shown = text(*apply_view(result(group("unchanged"), groups_omitted=7)))
    assert "no listed device would change" in shown and "7 more groups not listed" in shown


def test_no_unchanged_group_no_line() -> None:
    assert unchanged_line([group("track moved")]) is None


@pytest.mark.parametrize(
    ("reply", "changes"),
    [
        (result(group("unchanged"), action="unchanged"), False),
        (result(group("unchanged"), action="configured"), True),  # the document changed, no device does
        (result(group("track moved"), action="unchanged"), True),
        (result(group("unchanged"), action="unchanged", groups_omitted=1), True),  # unknown: counted as a change
        (result(action="created"), True),
    ],
)
def test_what_counts_as_a_change_for_diff_exit_code(reply: ApplyResult, changes: bool) -> None:
    assert would_change(reply) is changes


def test_the_list_puts_the_highest_priority_first_with_model_track_and_counts() -> None:
    def summary(name: str, priority: int, **fields: Any) -> BlueprintSummary:
        values: dict[str, Any] = dict(model=MODEL, track="stable", generation=1, devices=0, lost=0, summary="")
        return BlueprintSummary(name=name, priority=priority, applied_at=T0, **(values | fields))

    shown = text(blueprints_table([summary("low", 1), summary("high", 10, devices=40, lost=2, summary="converged")]))
    assert shown.index("high") < shown.index("low")
    high = next(line for line in shown.splitlines() if "high" in line)
    for cell in ("tiny-embedder@stable", "10", "40", "2", "converged"):
        assert cell in high


def test_the_stored_document_shown_as_yaml_applies_again_to_the_same_blueprint() -> None:
    (example,) = load_blueprints(EXAMPLE.read_text(), source=str(EXAMPLE))
    shown = document_yaml(StoredBlueprint(blueprint=example, generation=1, digest="d" * 64, applied_at=T0))
    assert load_blueprints(shown) == [example]
    assert "pin: 1.0.0" in shown or "pin: '1.0.0'" in shown


def test_lost_devices_are_listed_per_owner_with_what_was_not_listed() -> None:
    lost = {"r1": "high", "r2": "high", "j1": "other"} | {f"x{i}": "high" for i in range(6)}
    detail = BlueprintDetail(stored=stored(), devices=4, lost=lost, lost_count=20, groups=[])
    assert lost_lines(detail) == [
        "lost 20 devices to higher-priority blueprints:",
        "  to high: r1, r2, x0, x1, x2 and 3 more",
        "  to other: j1",
        "  and 11 devices not listed",
    ]
    assert lost_lines(detail.model_copy(update={"lost": {}, "lost_count": 0})) == [
        "lost no device to another blueprint"
    ]


def test_status_says_what_the_controller_did_and_whether_it_is_behind() -> None:
    assert text(*status_view(None, generation=1)).strip() == "status: not reconciled yet"
    status = BlueprintStatus(
        name="demo",
        generation=1,
        optimizations=[OptimizationRecord(version="1.1.0", profile="rpi5", state="failed", command_id="c", at=T0)],
        rollouts=[
            StartedRollout(
                rollout_id="bp-demo-1",
                version="1.1.0",
                group="default",
                generation=1,
                devices=30,
                state="soaking",
                started_at=T0 + timedelta(minutes=1),
            )
        ],
        promoted=["1.0.0"],
        summary="rolling out 1.1.0",
        updated_at=T0,
    )
    shown = text(*status_view(status, generation=2))
    assert "status (generation 1, 2026-01-01T00:00:00+00:00): rolling out 1.1.0" in shown
    assert "has not reconciled generation 2 yet" in shown
    assert "failed" in shown and "bp-demo-1" in shown and "soaking" in shown and "promoted: 1.0.0" in shown


def test_show_has_the_document_the_devices_and_the_groups() -> None:
    detail = BlueprintDetail(
        stored=stored(),
        devices=3,
        lost={},
        lost_count=0,
        groups=[group("track moved", 3)],
    )
    shown = text(*blueprint_view(detail))
    assert "blueprint/demo: generation 2, applied 2026-01-01T00:00:00+00:00, digest dddddddddddd" in shown
    assert "apiVersion: slmops.dev/v1" in shown and "track: stable" in shown
    assert "owns 3 devices" in shown and "should run" in shown and "track moved" in shown
    assert "status: not reconciled yet" in shown
