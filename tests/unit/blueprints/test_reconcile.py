"""The controller's decisions (services/blueprints/reconcile.py), as a pure function of observations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.blueprints import reconcile
from services.blueprints.ownership import resolve_owners
from services.blueprints.reconcile import Decision, Observations, decide, in_window, rollout_id_for
from services.blueprints.service import blueprint_digest
from shared.messages.blueprint import Blueprint, MaintenanceWindow
from shared.messages.blueprint_api import BlueprintStatus, StoredBlueprint
from shared.messages.common import config_digest
from shared.messages.device import DesiredState
from shared.messages.inventory import DeviceRecord
from shared.messages.optimizer import OptimizeModel
from shared.messages.registry import ModelDetail, SetAlias
from shared.messages.rollout import PauseRollout, ResumeRollout, StartRollout
from shared.messages.rollout_record import RolloutRecord
from tests.unit.blueprints.factories import T0, blueprint, desired, device, model_detail, rollout

NOON = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
FLEET = [device("r1", "rpi5", fleet="demo"), device("r2", "rpi5", fleet="demo"), device("j1", "jetson", fleet="demo")]


def stored(bp: Blueprint, generation: int = 1) -> StoredBlueprint:
    return StoredBlueprint(blueprint=bp, generation=generation, digest=blueprint_digest(bp), applied_at=T0)


def demo(**spec: Any) -> Blueprint:
    fields: dict[str, Any] = {
        "track": "candidate",
        "profiles": {"rpi5": "rpi5", "jetson": "jetson"},
        "rollout": {"waves": [50, 100], "soak": 0, "gates": ["error_rate<=0.05@10"]},
    } | spec
    fields["rollout"] = _expanded(fields["rollout"])
    return blueprint("demo", labels={"fleet": "demo"}, **fields)


def _expanded(policy: dict[str, Any]) -> dict[str, Any]:
    from shared.notation import parse_gate

    gates = [parse_gate(g).model_dump() if isinstance(g, str) else g for g in policy.get("gates", [])]
    return policy | {"gates": gates}


def observe(
    bp: Blueprint,
    *,
    tracked: ModelDetail | None,
    status: BlueprintStatus | None = None,
    devices: list[DeviceRecord] = FLEET,
    wanted: list[DesiredState] = (),  # type: ignore[assignment]
    rollouts: list[RolloutRecord] = (),  # type: ignore[assignment]
    now: datetime = NOON,
    generation: int = 1,
    **more: Any,
) -> Observations:
    owners = resolve_owners([bp], devices).owners
    return Observations(
        now=now,
        stored=stored(bp, generation),
        status=status,
        owned=owners,
        devices={d.device_id: d for d in devices},
        desired={d.device_id: d for d in wanted},
        rollouts={r.rollout_id: r for r in rollouts},
        tracked=tracked,
        **more,
    )


def starts(decision: Decision) -> list[StartRollout]:
    return [c for c, _ in decision.commands if isinstance(c, StartRollout)]


READY = model_detail("1.1.0", profiles=("rpi5", "jetson"), aliases=("candidate",))


def test_an_alias_that_points_nowhere_starts_nothing_and_says_so() -> None:
    decision = decide(observe(demo(), tracked=None))
    assert decision.commands == []
    assert "alias candidate of tiny-embedder is not set" in decision.status.summary
    assert decision.event is not None and decision.event.pending == 3, "its devices wait for the alias"


def test_devices_not_on_the_tracked_version_get_one_rollout_with_the_blueprints_policy() -> None:
    decision = decide(observe(demo(), tracked=READY))
    [start] = starts(decision)
    assert start.ref == "1.1.0" and start.model == "tiny-embedder"
    assert sorted(start.selector.device_ids) == ["j1", "r1", "r2"]
    assert [w.percent for w in start.waves] == [50, 100]
    assert [g.metric for g in start.gates] == ["error_rate"] and start.soak_seconds == 0
    assert start.profiles == {"rpi5": "rpi5", "jetson": "jetson"}
    assert start.rollout_id == rollout_id_for(stored(demo()), "1.1.0", "default", ["j1", "r1", "r2"])
    [remembered] = decision.status.rollouts
    assert (remembered.rollout_id, remembered.devices, remembered.group) == (start.rollout_id, 3, "default")
    assert decision.event is not None
    assert [a.kind for a in decision.event.actions] == ["start_rollout"]


def test_the_same_observations_with_the_rollout_running_start_nothing_more() -> None:
    first = decide(observe(demo(), tracked=READY))
    [start] = starts(first)
    running = rollout(start.rollout_id or "", ["j1", "r1", "r2"])
    again = decide(observe(demo(), tracked=READY, status=first.status, rollouts=[running]))
    assert again.commands == []
    assert "3 devices rolling out 1.1.0" in again.status.summary
    assert again.status.rollouts[0].state == "installing"


def test_converged_devices_are_left_alone_and_a_quiet_pass_emits_nothing() -> None:
    wanted = [
        desired("r1", "1.1.0", variant="rpi5-int8"),
        desired("r2", "1.1.0", variant="rpi5-int8"),
        desired("j1", "1.1.0", variant="jetson-int8"),
    ]
    first = decide(observe(demo(), tracked=READY, wanted=wanted))
    assert first.commands == [] and first.status.summary.startswith("converged: 3 devices")
    second = decide(observe(demo(), tracked=READY, wanted=wanted, status=first.status))
    assert second.commands == [] and second.event is None


def test_a_device_on_the_right_version_but_not_its_profiles_variant_is_rolled_out_again() -> None:
    wanted = [
        desired("r1", "1.1.0"),
        desired("r2", "1.1.0", variant="rpi5-int8"),
        desired("j1", "1.1.0", variant="jetson-int8"),
    ]
    [start] = starts(decide(observe(demo(), tracked=READY, wanted=wanted)))
    assert start.selector.device_ids == ["r1"]


def test_a_device_our_rollout_wrote_counts_as_converged_whatever_variant_the_planner_chose() -> None:
    rollout_id = rollout_id_for(stored(demo()), "1.1.0", "default", ["j1", "r1", "r2"])
    first = decide(observe(demo(), tracked=READY))
    done = rollout(rollout_id, ["j1", "r1", "r2"], state="completed")
    wanted = [desired(d, "1.1.0", rollout_id=rollout_id) for d in ("r1", "r2", "j1")]  # the base: fell back
    again = decide(observe(demo(), tracked=READY, wanted=wanted, rollouts=[done], status=first.status))
    assert starts(again) == []


def test_a_missing_profile_variant_is_built_first_and_the_rollout_waits_for_it() -> None:
    only_rpi = model_detail("1.1.0", profiles=("rpi5",), aliases=("candidate",))
    first = decide(observe(demo(), tracked=only_rpi))
    [(optimize, command_id)] = [(c, i) for c, i in first.commands if isinstance(c, OptimizeModel)]
    assert (optimize.version, optimize.profile) == ("1.1.0", "jetson")
    assert starts(first) == []
    assert "waiting for the optimizer to build 1.1.0 for jetson" in first.status.summary
    again = decide(observe(demo(), tracked=only_rpi, status=first.status, now=NOON + timedelta(seconds=5)))
    assert again.commands == [], "a build asked for is not asked for again"
    failed = reconcile.optimization_failed(again.status, command_id, "no candidate met the budgets")
    assert failed is not None
    after = decide(observe(demo(), tracked=only_rpi, status=failed, now=NOON + timedelta(seconds=10)))
    assert len(starts(after)) == 1, "a failed build lets the rollout go ahead with what exists"


def test_a_build_that_never_reports_is_given_up_on_after_the_timeout() -> None:
    only_rpi = model_detail("1.1.0", profiles=("rpi5",), aliases=("candidate",))
    first = decide(observe(demo(), tracked=only_rpi))
    later = NOON + reconcile.OPTIMIZE_TIMEOUT + timedelta(seconds=1)
    assert len(starts(decide(observe(demo(), tracked=only_rpi, status=first.status, now=later)))) == 1


def test_the_newest_version_is_built_before_the_alias_moves_to_it() -> None:
    newest = model_detail("1.2.0")
    wanted = [desired("r1", "1.1.0", variant="rpi5-int8"), desired("r2", "1.1.0", variant="rpi5-int8")]
    wanted.append(desired("j1", "1.1.0", variant="jetson-int8"))
    decision = decide(observe(demo(), tracked=READY, latest=newest, wanted=wanted))
    built = sorted((c.version, c.profile) for c, _ in decision.commands if isinstance(c, OptimizeModel))
    assert built == [("1.2.0", "jetson"), ("1.2.0", "rpi5")]
    assert starts(decision) == []


def test_a_version_without_an_evaluation_set_is_not_sent_to_the_optimizer() -> None:
    bare = model_detail("1.1.0", aliases=("candidate",), eval_set=False)
    decision = decide(observe(demo(), tracked=bare))
    assert not [c for c, _ in decision.commands if isinstance(c, OptimizeModel)]
    assert len(starts(decision)) == 1


def test_an_override_pin_is_one_ungated_wave_of_the_pinned_version_with_its_settings() -> None:
    bp = demo(overrides=[{"name": "lab", "match": {"site": "lab"}, "pin": "1.0.0", "config": {"lang": "de"}}])
    devices = [*FLEET, device("l1", "rpi5", fleet="demo", site="lab")]
    pinned = {"1.0.0": model_detail("1.0.0", profiles=("rpi5",))}
    decision = decide(observe(bp, tracked=READY, devices=devices, pinned=pinned))
    by_group = {s.selector.device_ids[0]: s for s in starts(decision)}
    lab = by_group["l1"]
    assert lab.ref == "1.0.0" and [w.percent for w in lab.waves] == [100] and lab.gates == []
    assert lab.config == {"lang": "de"}
    assert by_group["j1"].ref == "1.1.0" and by_group["j1"].config is None


def test_a_pin_that_is_not_registered_is_reported_not_rolled_out() -> None:
    bp = demo(overrides=[{"name": "lab", "match": {"site": "lab"}, "pin": "0.9.0"}])
    devices = [device("l1", "rpi5", fleet="demo", site="lab")]
    decision = decide(observe(bp, tracked=READY, devices=devices))
    assert starts(decision) == []
    assert "lab: pinned version 0.9.0 is not registered" in decision.status.summary


def test_settings_that_differ_make_a_device_pending_even_on_the_right_variant() -> None:
    bp = demo(overrides=[{"name": "de", "match": {"lang": "de"}, "config": {"lang": "de"}}])
    devices = [device("r1", "rpi5", fleet="demo", lang="de")]
    wrong = desired("r1", "1.1.0", variant="rpi5-int8", config={"lang": "en"})
    [start] = starts(decide(observe(bp, tracked=READY, devices=devices, wanted=[wrong])))
    assert start.config == {"lang": "de"} and [w.percent for w in start.waves] == [50, 100]  # the blueprint's policy
    right = wrong.model_copy(update={"config": {"lang": "de"}})
    assert starts(decide(observe(bp, tracked=READY, devices=devices, wanted=[right]))) == []
    assert config_digest({"lang": "de"}) != config_digest({"lang": "en"})


def test_a_rolled_back_version_blocks_its_group_until_the_blueprint_changes() -> None:
    first = decide(observe(demo(), tracked=READY))
    [start] = starts(first)
    failed = rollout(start.rollout_id or "", ["j1", "r1", "r2"], state="rolled_back")
    failed = failed.model_copy(update={"reason": "gate latency_p95_ms failed"})
    again = decide(observe(demo(), tracked=READY, status=first.status, rollouts=[failed]))
    assert again.commands == []
    assert "was rolled back: gate latency_p95_ms failed; waiting for a new version" in again.status.summary
    changed = decide(observe(demo(), tracked=READY, status=again.status, rollouts=[failed], generation=2))
    assert len(starts(changed)) == 1, "a changed blueprint tries again"


def test_a_device_that_enrols_later_gets_its_own_rollout() -> None:
    first = decide(observe(demo(), tracked=READY))
    [start] = starts(first)
    done = rollout(start.rollout_id or "", ["j1", "r1", "r2"], state="completed")
    wanted = [desired(d, "1.1.0", rollout_id=start.rollout_id) for d in ("j1", "r1", "r2")]
    devices = [*FLEET, device("r3", "rpi5", fleet="demo")]
    later = decide(observe(demo(), tracked=READY, status=first.status, rollouts=[done], wanted=wanted, devices=devices))
    [late] = starts(later)
    assert late.selector.device_ids == ["r3"]


def test_a_set_of_devices_refused_once_is_not_tried_again_until_something_changes() -> None:
    first = decide(observe(demo(), tracked=READY))
    [start] = starts(first)
    refused = reconcile.rollout_refused(first.status, start.rollout_id or "", "selects no device that can run it")
    again = decide(observe(demo(), tracked=READY, status=refused))
    assert again.commands == []
    assert "were tried by" in again.status.summary and "refused" in again.status.summary


def test_devices_of_another_running_rollout_wait_for_it() -> None:
    other = rollout("manual-1", ["r1"], state="installing")
    [start] = starts(decide(observe(demo(), tracked=READY, rollouts=[other])))
    assert start.selector.device_ids == ["j1", "r2"]


def test_promotion_moves_the_alias_once_the_rollout_completed_and_everything_converged() -> None:
    bp = demo(promote={"from": "candidate", "to": "stable"})
    first = decide(observe(bp, tracked=READY))
    [start] = starts(first)
    done = rollout(start.rollout_id or "", ["j1", "r1", "r2"], state="completed")
    wanted = [desired(d, "1.1.0", rollout_id=start.rollout_id) for d in ("j1", "r1", "r2")]
    decision = decide(observe(bp, tracked=READY, status=first.status, rollouts=[done], wanted=wanted))
    [(promote, _)] = [(c, i) for c, i in decision.commands if isinstance(c, SetAlias)]
    assert (promote.name, promote.alias, promote.version) == ("tiny-embedder", "stable", "1.1.0")
    assert decision.status.promoted == ["1.1.0"]
    again = decide(observe(bp, tracked=READY, status=decision.status, rollouts=[done], wanted=wanted))
    assert again.commands == [], "promoted once"
    promoted = READY.model_copy(update={"aliases": ["candidate", "stable"]})
    fresh = decide(observe(bp, tracked=promoted, status=first.status, rollouts=[done], wanted=wanted))
    assert fresh.commands == [], "nothing to move when the alias is there already"
    assert fresh.status.promoted == ["1.1.0"], "but the delivery counts as promoted"


def test_no_promotion_while_devices_are_pending() -> None:
    bp = demo(promote={"from": "candidate", "to": "stable"})
    first = decide(observe(bp, tracked=READY))
    [start] = starts(first)
    done = rollout(start.rollout_id or "", ["r1", "r2"], state="completed")
    wanted = [desired(d, "1.1.0", rollout_id=start.rollout_id) for d in ("r1", "r2")]
    decision = decide(observe(bp, tracked=READY, status=first.status, rollouts=[done], wanted=wanted))
    assert not [c for c, _ in decision.commands if isinstance(c, SetAlias)]


WINDOW = {"start": "01:00", "end": "05:00", "timezone": "UTC"}


NIGHT = datetime(2026, 1, 2, 2, 0, tzinfo=UTC)
MORNING = datetime(2026, 1, 2, 6, 0, tzinfo=UTC)


def closed_window() -> tuple[Blueprint, RolloutRecord, Decision]:
    """A blueprint whose rollout started inside its 01:00-05:00 window, and the pass at 06:00."""
    bp = demo(rollout={"waves": [100], "soak": 0, "maintenance_window": WINDOW})
    first = decide(observe(bp, tracked=READY, now=NIGHT))
    [start] = starts(first)
    running = rollout(start.rollout_id or "", ["j1", "r1", "r2"])
    return bp, running, decide(observe(bp, tracked=READY, now=MORNING, status=first.status, rollouts=[running]))


def test_outside_its_maintenance_window_a_group_waits_and_inside_it_starts() -> None:
    bp = demo(rollout={"waves": [100], "soak": 0, "maintenance_window": WINDOW})
    waiting = decide(observe(bp, tracked=READY))
    assert starts(waiting) == [] and "wait for the maintenance window 01:00-05:00 UTC" in waiting.status.summary
    night = datetime(2026, 1, 2, 2, 0, tzinfo=UTC)
    assert len(starts(decide(observe(bp, tracked=READY, now=night)))) == 1


def test_a_running_rollout_is_paused_when_its_window_closes_and_resumed_when_it_opens() -> None:
    bp, running, closed = closed_window()
    assert [type(c) for c, _ in closed.commands] == [PauseRollout]
    paused = running.model_copy(update={"state": "paused"})
    still = decide(observe(bp, tracked=READY, now=MORNING, status=closed.status, rollouts=[paused]))
    assert still.commands == []
    next_night = datetime(2026, 1, 3, 1, 30, tzinfo=UTC)
    opened = decide(observe(bp, tracked=READY, now=next_night, status=still.status, rollouts=[paused]))
    assert [type(c) for c, _ in opened.commands] == [ResumeRollout]


def test_a_rollout_an_operator_paused_is_not_resumed_by_the_window() -> None:
    bp = demo(rollout={"waves": [100], "soak": 0, "maintenance_window": WINDOW})
    night = datetime(2026, 1, 2, 2, 0, tzinfo=UTC)
    first = decide(observe(bp, tracked=READY, now=night))
    [start] = starts(first)
    paused = rollout(start.rollout_id or "", ["j1", "r1", "r2"], state="paused")
    assert decide(observe(bp, tracked=READY, now=night, status=first.status, rollouts=[paused])).commands == []


@pytest.mark.parametrize(
    ("start", "end", "clock", "inside"),
    [
        ("01:00", "05:00", "01:00", True),
        ("01:00", "05:00", "04:59", True),
        ("01:00", "05:00", "05:00", False),
        ("01:00", "05:00", "00:59", False),
        ("22:00", "04:00", "23:30", True),
        ("22:00", "04:00", "03:00", True),
        ("22:00", "04:00", "12:00", False),
    ],
)
def test_a_window_is_daily_and_may_cross_midnight(start: str, end: str, clock: str, inside: bool) -> None:
    hours, minutes = map(int, clock.split(":"))
    now = datetime(2026, 1, 1, hours, minutes, tzinfo=UTC)
    assert in_window(MaintenanceWindow(start=start, end=end), now) is inside


def test_a_window_is_read_in_its_time_zone() -> None:
    berlin = MaintenanceWindow(start="01:00", end="05:00", timezone="Europe/Berlin")
    assert in_window(berlin, datetime(2026, 1, 1, 1, 30, tzinfo=UTC))  # 02:30 in Berlin
    assert not in_window(berlin, datetime(2026, 1, 1, 4, 30, tzinfo=UTC))  # 05:30 in Berlin


def test_a_group_of_more_devices_than_a_rollout_takes_is_rolled_out_a_thousand_at_a_time() -> None:
    many = [device(f"d{i:05d}", "rpi5", fleet="demo") for i in range(1500)]
    [start] = starts(decide(observe(demo(), tracked=READY, devices=many)))
    assert len(start.selector.device_ids) == 1000 and start.selector.device_ids[0] == "d00000"


def test_the_rollout_id_is_a_valid_token_and_depends_on_every_part() -> None:
    one = stored(demo())
    reapplied = one.model_copy(update={"applied_at": T0 + timedelta(days=1)})
    ids = {
        rollout_id_for(one, "1.1.0", "default", ["a"]),
        rollout_id_for(stored(demo(), 2), "1.1.0", "default", ["a"]),
        rollout_id_for(reapplied, "1.1.0", "default", ["a"]),
        rollout_id_for(one, "1.2.0", "default", ["a"]),
        rollout_id_for(one, "1.1.0", "lab", ["a"]),
        rollout_id_for(one, "1.1.0", "default", ["a", "b"]),
    }
    assert len(ids) == 6 and all(i.startswith("bp-") and len(i) == 19 for i in ids)


def test_a_first_install_leaves_out_the_gates_that_compare_with_a_previous_model() -> None:
    bp = demo(rollout={"waves": [50, 100], "soak": 0, "gates": ["error_rate<=0.05@10", "latency_p95_ms<=+50%@10"]})
    decision = decide(observe(bp, tracked=READY))
    [start] = starts(decision)
    assert [g.metric for g in start.gates] == ["error_rate"]
    assert "without its baseline comparisons" in decision.status.summary
    upgrade = [desired(d, "1.0.0") for d in ("r1", "r2", "j1")]
    [again] = starts(decide(observe(bp, tracked=READY, wanted=upgrade)))
    assert [g.metric for g in again.gates] == ["error_rate", "latency_p95_ms"], "an upgrade keeps them"


def test_a_built_variant_marks_its_build_done() -> None:
    only_rpi = model_detail("1.1.0", profiles=("rpi5",), aliases=("candidate",))
    first = decide(observe(demo(), tracked=only_rpi))
    built = decide(observe(demo(), tracked=READY, status=first.status))
    assert [(o.profile, o.state) for o in built.status.optimizations] == [("jetson", "built")]


def test_a_relabelled_device_joins_its_new_group_and_gets_that_groups_version() -> None:
    bp = demo(overrides=[{"name": "lab", "match": {"site": "lab"}, "pin": "1.0.0"}])
    pinned = {"1.0.0": model_detail("1.0.0", profiles=("rpi5", "jetson"))}
    on_track = [desired(d, "1.1.0", variant="rpi5-int8") for d in ("r1", "r2")]
    on_track.append(desired("j1", "1.1.0", variant="jetson-int8"))
    assert starts(decide(observe(bp, tracked=READY, wanted=on_track, pinned=pinned))) == []
    moved = [device("r1", "rpi5", fleet="demo", site="lab"), *FLEET[1:]]
    [start] = starts(decide(observe(bp, tracked=READY, wanted=on_track, pinned=pinned, devices=moved)))
    assert (start.selector.device_ids, start.ref) == (["r1"], "1.0.0")


def test_a_device_assigned_something_else_by_hand_is_brought_back() -> None:
    wanted = [desired("r1", "0.9.0", rollout_id="assign-r1"), desired("r2", "1.1.0", variant="rpi5-int8")]
    wanted.append(desired("j1", "1.1.0", variant="jetson-int8"))
    [start] = starts(decide(observe(demo(), tracked=READY, wanted=wanted)))
    assert start.selector.device_ids == ["r1"]


def test_a_rollout_paused_on_an_inconclusive_gate_is_named_with_what_to_do() -> None:
    first = decide(observe(demo(), tracked=READY))
    [start] = starts(first)
    paused = rollout(start.rollout_id or "", ["j1", "r1", "r2"], state="paused")
    paused = paused.model_copy(update={"reason": "wave 0 Inconclusive: 12 samples, 50 needed"})
    again = decide(observe(demo(), tracked=READY, status=first.status, rollouts=[paused]))
    assert again.commands == []
    assert f"rollout {start.rollout_id} of 1.1.0 is paused: wave 0 Inconclusive" in again.status.summary
    assert "(slmops rollout resume or rollback)" in again.status.summary


def test_the_devices_beyond_one_rollout_wait_for_it_to_end_then_get_theirs() -> None:
    many = [device(f"d{i:05d}", "rpi5", fleet="demo") for i in range(1500)]
    first = decide(observe(demo(), tracked=READY, devices=many))
    [start] = starts(first)
    chunk = list(start.selector.device_ids)
    running = rollout(start.rollout_id or "", chunk)
    during = decide(observe(demo(), tracked=READY, devices=many, status=first.status, rollouts=[running]))
    assert starts(during) == [] and "500 more devices wait for rollout" in during.status.summary
    done = running.model_copy(update={"state": "completed"})
    wanted = [desired(d, "1.1.0", rollout_id=start.rollout_id) for d in chunk]
    after = decide(observe(demo(), tracked=READY, devices=many, status=during.status, rollouts=[done], wanted=wanted))
    [rest] = starts(after)
    assert len(rest.selector.device_ids) == 500 and rest.selector.device_ids[0] == "d01000"


def test_a_pinned_group_still_installing_does_not_hold_back_the_promotion() -> None:
    bp = demo(
        promote={"from": "candidate", "to": "stable"},
        overrides=[{"name": "lab", "match": {"site": "lab"}, "pin": "1.0.0"}],
    )
    devices = [*FLEET, device("l1", "rpi5", fleet="demo", site="lab")]
    pinned = {"1.0.0": model_detail("1.0.0", profiles=("rpi5",))}
    first = decide(observe(bp, tracked=READY, devices=devices, pinned=pinned))
    track = next(s for s in starts(first) if s.ref == "1.1.0")
    lab = next(s for s in starts(first) if s.ref == "1.0.0")
    done = rollout(track.rollout_id or "", ["j1", "r1", "r2"], state="completed")
    lab_running = rollout(lab.rollout_id or "", ["l1"], version="1.0.0")
    wanted = [desired(d, "1.1.0", rollout_id=track.rollout_id) for d in ("j1", "r1", "r2")]
    decision = decide(
        observe(
            bp,
            tracked=READY,
            devices=devices,
            pinned=pinned,
            status=first.status,
            rollouts=[done, lab_running],
            wanted=wanted,
        )
    )
    assert [c.alias for c, _ in decision.commands if isinstance(c, SetAlias)] == ["stable"]


def test_pausing_and_resuming_for_the_window_are_actions_in_the_event() -> None:
    bp, running, closed = closed_window()
    assert closed.event is not None and [a.kind for a in closed.event.actions] == ["pause_rollout"]


def test_a_rollout_paused_for_the_window_of_an_earlier_generation_is_resumed() -> None:
    bp, running, closed = closed_window()
    paused = running.model_copy(update={"state": "paused"})
    changed = decide(observe(demo(), tracked=READY, now=MORNING, status=closed.status, rollouts=[paused], generation=2))
    assert [type(c) for c, _ in changed.commands] == [ResumeRollout]


def test_a_rollout_asked_for_that_never_starts_is_asked_for_again_each_minute() -> None:
    first = decide(observe(demo(), tracked=READY))
    [(start, first_id)] = first.commands
    quiet = decide(observe(demo(), tracked=READY, status=first.status, now=NOON + timedelta(seconds=30)))
    assert quiet.commands == [] and "not started yet" in quiet.status.summary
    late = decide(observe(demo(), tracked=READY, status=first.status, now=NOON + timedelta(seconds=61)))
    [(again, again_id)] = late.commands
    assert again == start and again_id != first_id, "the same command, under a new id the stream will not drop"
    assert "asked again (1)" in late.status.summary
    started = rollout(start.rollout_id or "", ["j1", "r1", "r2"])  # type: ignore[attr-defined]
    seen = decide(
        observe(demo(), tracked=READY, status=first.status, rollouts=[started], now=NOON + timedelta(seconds=61))
    )
    assert seen.commands == []


def test_a_window_pause_an_operator_resumed_is_paused_again_when_the_window_closes_again() -> None:
    bp, running, closed = closed_window()
    resumed_by_hand = decide(observe(bp, tracked=READY, now=MORNING, status=closed.status, rollouts=[running]))
    assert [type(c) for c, _ in resumed_by_hand.commands] == [PauseRollout], "outside its window, paused again"


def test_a_group_pinned_to_an_unregistered_version_is_pending_not_delivered() -> None:
    bp = demo(overrides=[{"name": "lab", "match": {"site": "lab"}, "pin": "0.9.0"}])
    devices = [device("l1", "rpi5", fleet="demo", site="lab")]
    decision = decide(observe(bp, tracked=READY, devices=devices))
    assert decision.status.pending == 1 and decision.status.converged == 0


def test_a_new_version_waits_for_the_groups_running_rollout_of_the_previous_one() -> None:
    first = decide(observe(demo(), tracked=READY))
    [start] = starts(first)
    running = rollout(start.rollout_id or "", ["r1"])
    newer = model_detail("1.2.0", profiles=("rpi5", "jetson"), aliases=("candidate",))
    moved = decide(observe(demo(), tracked=newer, status=first.status, rollouts=[running]))
    assert starts(moved) == [] and f"wait for rollout {start.rollout_id} to end" in moved.status.summary
