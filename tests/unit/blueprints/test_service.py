"""The blueprints service's use cases on in-memory adapters: apply (all or nothing, idempotent),
diff, show, delete, and the controller pass that sends what it decided and saves it."""

from __future__ import annotations

from typing import Any

import pytest

from services.blueprints.adapters.memory import (
    MemoryBlueprintStore,
    MemoryFleet,
    MemoryOptimizer,
    MemoryRegistry,
    RecordingAnnouncer,
    RecordingSender,
)
from services.blueprints.errors import InvalidBlueprint, PriorityTie
from services.blueprints.reconcile import rollout_id_for
from services.blueprints.service import BlueprintService
from shared.errors import NotFound
from shared.messages.blueprint import Blueprint
from shared.messages.blueprint_api import (
    ApplyBlueprints,
    BlueprintApplied,
    BlueprintReconciled,
    DeleteBlueprint,
    GetBlueprint,
    ListBlueprints,
)
from shared.messages.envelope import deterministic_id
from shared.messages.optimizer import OptimizationFailed, OptimizeModel
from shared.messages.rollout import StartRollout
from tests.unit.blueprints.factories import blueprint, desired, device, model_detail

PROFILES = {"rpi5": "rpi5", "jetson": "jetson", "gateway": "gateway"}


class World:
    def __init__(self) -> None:
        self.store = MemoryBlueprintStore()
        self.fleet = MemoryFleet()
        self.registry = MemoryRegistry()
        self.sender = RecordingSender()
        self.announcer = RecordingAnnouncer()
        self.service = BlueprintService(
            store=self.store,
            fleet=self.fleet,
            registry=self.registry,
            optimizer=MemoryOptimizer(dict(PROFILES)),
            commands=self.sender,
            announcer=self.announcer,
        )
        for d in (device("r1", "rpi5", fleet="demo"), device("j1", "jetson", fleet="demo"), device("x1", "rpi5")):
            self.fleet.device_records[d.device_id] = d
        self.registry.details[("tiny-embedder", "1.0.0")] = model_detail("1.0.0", profiles=("rpi5", "jetson"))
        self.registry.details[("tiny-embedder", "1.1.0")] = model_detail(
            "1.1.0", profiles=("rpi5", "jetson"), aliases=("candidate",)
        )
        self.registry.refs[("tiny-embedder", "candidate")] = "1.1.0"

    async def apply(self, *blueprints: Blueprint, dry_run: bool = False) -> Any:
        return await self.service.apply(ApplyBlueprints(blueprints=list(blueprints), dry_run=dry_run, source="f.yaml"))


def demo(**spec: Any) -> Blueprint:
    fields = {"track": "candidate", "profiles": {"rpi5": "rpi5", "jetson": "jetson"}, "priority": 10} | spec
    return blueprint("demo", labels={"fleet": "demo"}, **fields)


@pytest.fixture
def world() -> World:
    return World()


async def test_apply_stores_a_blueprint_and_applying_it_again_changes_nothing(world: World) -> None:
    first = await world.apply(demo())
    assert [(b.name, b.action, b.generation) for b in first.blueprints] == [("demo", "created", 1)]
    assert sorted((g.device_class, g.reason, g.count) for g in first.groups) == [
        ("jetson", "new blueprint", 1),
        ("rpi5", "new blueprint", 1),
    ]
    again = await world.apply(demo())
    assert [(b.action, b.generation) for b in again.blueprints] == [("unchanged", 1)]
    applied = [e for e, _ in world.announcer.events if isinstance(e, BlueprintApplied)]
    assert [(e.action, e.generation) for e in applied] == [("created", 1)], "an unchanged apply emits nothing"
    changed = await world.apply(demo(priority=11))
    assert [(b.action, b.generation) for b in changed.blueprints] == [("configured", 2)]


async def test_a_dry_run_says_what_would_change_and_stores_nothing(world: World) -> None:
    result = await world.apply(demo(), dry_run=True)
    assert result.dry_run and [b.action for b in result.blueprints] == ["created"]
    assert sorted(g.device_class for g in result.groups) == ["jetson", "rpi5"]
    assert all(g.after is not None and g.after.version == "1.1.0" for g in result.groups)
    assert await world.store.specs() == {} and world.announcer.events == []


async def test_apply_refuses_what_the_platform_does_not_know_with_the_field_and_stores_nothing(world: World) -> None:
    bad = demo(profiles={"rpi5": "jetson"}, model="no-such-model")
    with pytest.raises(InvalidBlueprint) as refused:
        await world.apply(blueprint("ok", labels={"fleet": "demo"}, track="candidate"), bad)
    text = str(refused.value)
    assert "spec.model: no model 'no-such-model' is registered" in text
    assert "spec.profiles.rpi5: profile 'jetson' is for class jetson, not rpi5" in text
    assert await world.store.specs() == {}, "all or nothing: the valid one is not stored either"


async def test_apply_refuses_a_blueprint_that_selects_no_device(world: World) -> None:
    with pytest.raises(InvalidBlueprint, match=r"spec.selector: selects no device of the 3 in the inventory"):
        await world.apply(blueprint("nobody", labels={"fleet": "elsewhere"}, track="candidate"))


async def test_apply_refuses_a_priority_tie_with_a_stored_blueprint(world: World) -> None:
    await world.apply(demo())
    rival = blueprint("rival", labels={"fleet": "demo"}, track="candidate", priority=10)
    with pytest.raises(PriorityTie, match="same priority"):
        await world.apply(rival)
    assert list(await world.store.specs()) == ["demo"]


async def test_apply_refuses_the_same_name_twice_in_one_request(world: World) -> None:
    with pytest.raises(InvalidBlueprint, match="document 1 has this name too"):
        await world.apply(demo(), demo(priority=3))


async def test_show_lists_the_devices_a_blueprint_lost_and_to_whom(world: World) -> None:
    everyone = blueprint("everyone", track="candidate", priority=1)
    await world.apply(demo(), everyone)
    detail = await world.service.detail(GetBlueprint(name="everyone"))
    assert detail.devices == 1 and detail.lost == {"j1": "demo", "r1": "demo"} and detail.lost_count == 2
    summaries = {s.name: (s.devices, s.lost) for s in await world.service.summaries(ListBlueprints())}
    assert summaries == {"demo": (2, 0), "everyone": (1, 2)}
    with pytest.raises(NotFound):
        await world.service.detail(GetBlueprint(name="ghost"))


async def test_delete_forgets_a_blueprint_and_says_so(world: World) -> None:
    await world.apply(demo())
    await world.service.reconcile_all()
    deleted = await world.service.delete(DeleteBlueprint(name="demo"))
    assert deleted.action == "deleted" and await world.store.specs() == {}
    assert await world.store.status("demo") is None, "applied again, it starts afresh"
    with pytest.raises(NotFound):
        await world.service.delete(DeleteBlueprint(name="demo"))


async def test_a_pass_sends_the_rollout_saves_the_status_and_announces_it(world: World) -> None:
    await world.apply(demo())
    [decision] = await world.service.reconcile_all()
    [(start, command_id)] = world.sender.sent
    assert isinstance(start, StartRollout) and sorted(start.selector.device_ids) == ["j1", "r1"]
    assert command_id == deterministic_id("blueprint-rollout", start.rollout_id or "")
    status = await world.store.status("demo")
    assert status is not None and status[0].rollouts[0].rollout_id == start.rollout_id
    reconciled = [e for e, _ in world.announcer.events if isinstance(e, BlueprintReconciled)]
    assert len(reconciled) == 1 and reconciled[0].actions[0].kind == "start_rollout"


async def test_a_refused_rollout_is_remembered_with_the_reason_and_not_sent_again(world: World) -> None:
    await world.apply(demo())
    rollout_id = rollout_id_for((await world.store.specs())["demo"][0], "1.1.0", "default", ["j1", "r1"])
    world.sender.refuse[deterministic_id("blueprint-rollout", rollout_id)] = "devices r1 are in rollout x"
    await world.service.reconcile_all()
    await world.service.reconcile_all()
    assert len(world.sender.sent) == 1
    status = await world.store.status("demo")
    assert status is not None and status[0].rollouts[0].state == "refused"
    assert "devices r1 are in rollout x" in status[0].summary


async def test_a_converged_fleet_makes_a_pass_quiet(world: World) -> None:
    await world.apply(demo())
    world.fleet.desired_states["r1"] = desired("r1", "1.1.0", variant="rpi5-int8")
    world.fleet.desired_states["j1"] = desired("j1", "1.1.0", variant="jetson-int8")
    await world.service.reconcile_all()
    await world.service.reconcile_all()
    assert world.sender.sent == []
    assert len([e for e, _ in world.announcer.events if isinstance(e, BlueprintReconciled)]) == 1


async def test_a_failed_build_event_lets_the_waiting_rollout_go_ahead(world: World) -> None:
    world.registry.details[("tiny-embedder", "1.1.0")] = model_detail(
        "1.1.0", profiles=("rpi5",), aliases=("candidate",)
    )
    await world.apply(demo())
    await world.service.reconcile_all()
    [(optimize, command_id)] = world.sender.sent
    assert isinstance(optimize, OptimizeModel) and optimize.profile == "jetson"
    failed = OptimizationFailed(optimization_id=command_id, name="tiny-embedder", version="1.1.0", reason="budgets")
    outcome = await world.service.on_optimization_failed(failed, event_id="e1")
    assert outcome.status == "applied"
    assert (await world.service.on_optimization_failed(failed, event_id="e1")).status == "unchanged"
    await world.service.reconcile_all()
    assert [type(c) for c, _ in world.sender.sent] == [OptimizeModel, StartRollout]


async def test_the_metrics_count_what_a_pass_did_and_how_much_of_the_fleet_is_where_it_should_be(world: World) -> None:
    await world.apply(demo())
    await world.service.reconcile_all()
    metrics = world.service.metrics.registry
    assert metrics.get_sample_value("slmops_blueprints_actions_total", {"kind": "start_rollout"}) == 1
    assert metrics.get_sample_value("slmops_blueprints_devices_pending", {"blueprint": "demo"}) == 2
    assert metrics.get_sample_value("slmops_blueprints_devices_converged", {"blueprint": "demo"}) == 0
    await world.service.delete(DeleteBlueprint(name="demo"))
    assert metrics.get_sample_value("slmops_blueprints_devices_pending", {"blueprint": "demo"}) is None


async def test_a_diff_may_name_a_model_not_pushed_yet_but_an_apply_may_not(world: World) -> None:
    future = demo(model="next-model")
    result = await world.apply(future, dry_run=True)
    assert {g.reason for g in result.groups} == {"alias not set"}
    with pytest.raises(InvalidBlueprint, match="no model 'next-model' is registered"):
        await world.apply(future)


async def test_a_pass_that_changes_nothing_writes_nothing(world: World) -> None:
    await world.apply(demo())
    world.fleet.desired_states["r1"] = desired("r1", "1.1.0", variant="rpi5-int8")
    world.fleet.desired_states["j1"] = desired("j1", "1.1.0", variant="jetson-int8")
    await world.service.reconcile_all()
    found = await world.store.status("demo")
    assert found is not None
    await world.service.reconcile_all()
    again = await world.store.status("demo")
    assert again is not None and again[1] == found[1], "the same status: no write"


async def test_a_failed_build_is_remembered_even_for_a_status_written_meanwhile(world: World) -> None:
    world.registry.details[("tiny-embedder", "1.1.0")] = model_detail(
        "1.1.0", profiles=("rpi5",), aliases=("candidate",)
    )
    await world.apply(demo())
    await world.service.reconcile_all()
    [(_, command_id)] = world.sender.sent
    failed = OptimizationFailed(optimization_id=command_id, name="tiny-embedder", version="1.1.0", reason="budgets")
    assert (await world.service.on_optimization_failed(failed, event_id="e1")).status == "applied"
    status = await world.store.status("demo")
    assert status is not None and [o.state for o in status[0].optimizations] == ["failed"]
