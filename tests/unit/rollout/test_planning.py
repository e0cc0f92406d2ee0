"""Rollout planning (services/rollout/planning.py) as tables and invariants: what a selector
selects, what a device misses, which artifact each device gets, and how waves are cut per class."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.rollout.planning import (
    Exclusion,
    Target,
    base_requirements,
    max_opset,
    plan,
    resolve,
    stratify,
    unmet,
)
from shared.messages.inventory import DeviceRecord
from shared.messages.registry import Artifact, ModelVersionRecord, OnnxInfo, Requirements, VariantRecord
from shared.messages.rollout import Selector, Wave
from shared.selection import selects

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MIB = 1024**2


def device(device_id: str = "d1", **fields: Any) -> DeviceRecord:
    values: dict[str, Any] = {
        "device_id": device_id,
        "device_class": "rpi5",
        "arch": "aarch64",
        "ram_mb": 8192,
        "cpu_count": 4,
        "onnxruntime_version": "1.20.1",
        "execution_providers": ["CPUExecutionProvider"],
        "agent_version": "1",
        "first_seen": T0,
        "hello_at": T0,
        "active_at": T0,
        "last_seen": T0,
    } | fields
    return DeviceRecord(**values)


def artifact(tag: str, size_bytes: int) -> Artifact:
    digest = (tag * 64)[:64]
    return Artifact(digest=digest, size_bytes=size_bytes, key=f"blobs/sha256/{digest}", signature="sig")


def version(*, size_bytes: int = 90 * MIB, opset: int = 17, op_types: list[str] | None = None) -> ModelVersionRecord:
    return ModelVersionRecord(
        name="minilm",
        version="1.0",
        artifact=artifact("a", size_bytes),
        onnx=OnnxInfo(ir_version=8, opsets={"": opset}, inputs=[], outputs=[], parameters=0, op_types=op_types or []),
        registered_at=T0,
        command_id="c",
    )


def variant(name: str, tag: str, *, size_bytes: int, built_for: str | None, **needs: Any) -> VariantRecord:
    return VariantRecord(
        name="minilm",
        version="1.0",
        variant=name,
        parent_digest="a" * 64,
        artifact=artifact(tag, size_bytes),
        onnx=OnnxInfo(ir_version=8, opsets={"": 17}, inputs=[], outputs=[], parameters=0, op_types=[]),
        recipe={"recipe": {"name": name}, "profile": f"{built_for}-profile", "device_class": built_for}
        if built_for
        else {},
        requirements=Requirements(**needs),
        registered_at=T0,
        command_id="c",
    )


@pytest.mark.parametrize(
    ("selector", "fields", "selected"),
    [
        (Selector(), {}, True),
        (Selector(labels={"site": "north"}), {"labels": {"site": "north", "x": "1"}}, True),
        (Selector(labels={"site": "north"}), {"labels": {"site": "south"}}, False),
        (Selector(labels={"site": "north"}), {}, False),
        (Selector(device_classes=["rpi5", "jetson"]), {}, True),
        (Selector(device_classes=["gateway"]), {}, False),
        (Selector(device_ids=["d1", "d9"]), {}, True),
        (Selector(device_ids=["d9"]), {}, False),
        (Selector(arch=["x86_64"]), {}, False),
        (Selector(min_ram_mb=8192), {}, True),
        (Selector(min_ram_mb=8193), {}, False),
        (Selector(accelerators=["cuda"]), {"accelerators": ["cuda", "tensorrt"]}, True),
        (Selector(accelerators=["cuda", "npu"]), {"accelerators": ["cuda"]}, False),
        (Selector(labels={"site": "north"}, device_classes=["rpi5"]), {"labels": {"site": "north"}}, True),
    ],
)
def test_a_selector_selects_when_every_condition_holds(
    selector: Selector, fields: dict[str, Any], selected: bool
) -> None:
    assert selects(selector, device(**fields)) is selected


@pytest.mark.parametrize(
    ("needs", "fields", "missing"),
    [
        (Requirements(), {}, []),
        (Requirements(min_onnxruntime="1.17"), {"onnxruntime_version": "1.17"}, []),
        (Requirements(min_onnxruntime="1.17"), {"onnxruntime_version": "1.16.3"}, ["onnxruntime >= 1.17 (has 1.16.3)"]),
        (Requirements(opset=21), {"onnxruntime_version": "1.18.0"}, []),
        (
            Requirements(opset=21),
            {"onnxruntime_version": "1.17.3"},
            ["opset 21 (onnxruntime 1.17.3 implements up to 20)"],
        ),
        (Requirements(min_ram_mb=300), {"ram_mb": 256}, ["300 MB RAM (has 256)"]),
        (Requirements(accelerators=["cuda"]), {}, ["accelerator cuda"]),
        (Requirements(contrib_ops=["com.microsoft.MatMulNBits"]), {}, []),
        (
            Requirements(contrib_ops=["com.microsoft.MatMulNBits"]),
            {"execution_providers": ["XnnpackExecutionProvider"]},
            ["the CPUExecutionProvider for com.microsoft.MatMulNBits"],
        ),
        (
            Requirements(min_onnxruntime="1.20", min_ram_mb=4096),
            {"onnxruntime_version": "1.19", "ram_mb": 2048},
            ["onnxruntime >= 1.20 (has 1.19)", "4096 MB RAM (has 2048)"],
        ),
    ],
)
def test_unmet_names_every_requirement_a_device_misses(
    needs: Requirements, fields: dict[str, Any], missing: list[str]
) -> None:
    assert unmet(needs, device(**fields)) == missing


@pytest.mark.parametrize(
    ("release", "opset"), [("1.9.0", 0), ("1.10", 15), ("1.16.3", 19), ("1.17.0", 20), ("1.20.1", 21), ("1.99.0", 22)]
)
def test_a_release_runs_the_opsets_it_implements_and_one_beyond_the_table_no_more(release: str, opset: int) -> None:
    assert max_opset(release) == opset


def test_the_base_model_needs_its_opset_its_contrib_operators_and_ram_for_two_copies() -> None:
    needs = base_requirements(version(size_bytes=90 * MIB, opset=17, op_types=["MatMul", "com.microsoft.QGemm"]))
    assert (needs.opset, needs.contrib_ops, needs.min_ram_mb) == (17, ["com.microsoft.QGemm"], 2 * 90 + 64)


INT8_RPI5 = variant("int8", "b", size_bytes=23 * MIB, built_for="rpi5", min_onnxruntime="1.16", min_ram_mb=110)
INT4_GATEWAY = variant("int4", "c", size_bytes=15 * MIB, built_for="gateway", min_onnxruntime="1.17", min_ram_mb=94)
FP16_JETSON = variant("fp16", "d", size_bytes=45 * MIB, built_for="jetson", min_ram_mb=154, accelerators=["cuda"])
VARIANTS = [INT8_RPI5, INT4_GATEWAY, FP16_JETSON]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"device_class": "rpi5"}, "int8"),  # the optimizer's choice for its class
        ({"device_class": "jetson", "accelerators": ["cuda"]}, "fp16"),
        ({"device_class": "jetson"}, None),  # its variant needs cuda: the base
        ({"device_class": "gateway", "onnxruntime_version": "1.16"}, None),  # int4 needs 1.17: the base
        ({"device_class": "phone"}, None),  # no variant of its own: the base
        ({"device_class": "phone", "ram_mb": 200}, "int4"),  # the base needs 244 MB: the smallest that fits
        ({"device_class": "phone", "ram_mb": 200, "onnxruntime_version": "1.16"}, "int8"),
    ],
)
def test_each_device_gets_its_class_s_variant_else_the_base_else_the_smallest_that_fits(
    fields: dict[str, Any], expected: str | None
) -> None:
    resolved = resolve(device(**fields), version(), VARIANTS)
    assert isinstance(resolved, Target) and resolved.variant == expected
    wanted = next((v.artifact for v in VARIANTS if v.variant == expected), version().artifact)
    assert resolved.artifact == wanted


def test_a_device_that_can_run_nothing_is_excluded_with_what_each_artifact_needs() -> None:
    resolved = resolve(device(device_class="rpi5", ram_mb=64, active_digest="e" * 64), version(), VARIANTS)
    assert isinstance(resolved, Exclusion)
    assert resolved.reason == (
        "variant int8 (built for rpi5) needs 110 MB RAM (has 64); the base model needs 244 MB RAM (has 64); "
        "variant int4 (built for gateway) needs 94 MB RAM (has 64); "
        "variant fp16 (built for jetson) needs 154 MB RAM (has 64), accelerator cuda"
    )


@pytest.mark.parametrize(
    ("pin", "fields", "expected"),
    [
        ("fp16", {"device_class": "jetson", "accelerators": ["cuda"]}, "fp16"),
        ("int4", {"device_class": "rpi5"}, "int4"),  # another class's variant, as asked
        ("base", {"device_class": "rpi5"}, None),  # the base model, though its class has a variant
        ("fp16", {"device_class": "jetson"}, "variant fp16 (built for jetson) needs accelerator cuda"),
    ],
)
def test_a_pinned_variant_is_the_only_candidate(pin: str, fields: dict[str, Any], expected: str | None) -> None:
    resolved = resolve(device(**fields), version(), VARIANTS, pin=pin)
    if isinstance(resolved, Exclusion):
        assert resolved.reason == expected, "excluded with what the pinned artifact needs, nothing else"
    else:
        assert resolved.variant == expected


def test_a_plan_selects_resolves_and_stratifies_and_keeps_what_each_device_ran() -> None:
    fleet = [device(f"r{i}", device_class="rpi5", active_digest="e" * 64) for i in range(20)]
    fleet += [device(f"g{i}", device_class="gateway", ram_mb=64) for i in range(3)]  # too small for anything
    fleet += [device(f"j{i}", device_class="jetson", accelerators=["cuda"], labels={"site": "x"}) for i in range(5)]
    planned = plan(
        rollout_id="r-1",
        selector=Selector(device_classes=["rpi5", "gateway"]),
        waves=[Wave(percent=10), Wave(percent=100)],
        version=version(),
        variants=VARIANTS,
        devices=fleet,
    )
    assert [t.device_id for t in planned.targets] == sorted(f"r{i}" for i in range(20))
    assert {t.previous_digest for t in planned.targets} == {"e" * 64} and {t.variant for t in planned.targets} == {
        "int8"
    }
    assert [e.device_id for e in planned.excluded] == ["g0", "g1", "g2"]
    assert [(w.contract().devices, w.contract().by_class) for w in planned.waves] == [
        (2, {"rpi5": 2}),
        (18, {"rpi5": 18}),
    ]


def targets_of(sizes: dict[str, int]) -> list[Target]:
    a = artifact("a", 1)
    return [
        Target(device_id=f"{name}-{i}", device_class=name, variant=None, artifact=a, previous_digest=None)
        for name, n in sizes.items()
        for i in range(n)
    ]


@given(
    sizes=st.dictionaries(st.sampled_from(["rpi5", "jetson", "gateway", "phone"]), st.integers(1, 300), min_size=1),
    shares=st.lists(st.floats(0.1, 99.9), max_size=4, unique=True).map(lambda s: [*sorted(s), 100.0]),
)
def test_waves_give_every_class_a_canary_and_cover_each_device_exactly_once(
    sizes: dict[str, int], shares: list[float]
) -> None:
    targets = targets_of(sizes)
    waves = stratify([Wave(percent=p) for p in shares], targets, seed="r-1")

    assert set(waves[0].by_class) == set(sizes), "every class present gets its canary in the first wave"
    placed = [d for w in waves for d in w.device_ids]
    assert sorted(placed) == sorted(t.device_id for t in targets) and len(set(placed)) == len(placed)
    reached: Counter[str] = Counter()
    for w in waves:
        reached.update(w.by_class)
        assert sum(w.by_class.values()) == len(w.device_ids)
        for name, n in sizes.items():  # never past the wave's share of the class (but its canary)
            assert reached[name] <= max(1, math.ceil(n * w.percent / 100))


def test_canaries_are_a_stable_shuffle_of_the_rollout_id() -> None:
    targets = targets_of({"rpi5": 100})
    waves = [Wave(percent=5), Wave(percent=100)]
    first = stratify(waves, targets, seed="r-1")[0].device_ids
    assert stratify(waves, targets, seed="r-1")[0].device_ids == first
    assert stratify(waves, targets, seed="r-2")[0].device_ids != first
    assert first != tuple(f"rpi5-{i}" for i in range(5)), "not the alphabetically first devices"


def test_a_variant_from_before_the_class_was_recorded_is_matched_by_its_profile_s_name() -> None:
    older = INT8_RPI5.model_copy(update={"recipe": {"recipe": {}, "profile": "rpi5"}})
    resolved = resolve(device(device_class="rpi5"), version(), [older])
    assert isinstance(resolved, Target) and resolved.variant == "int8"


# Two profiles for rpi5 (the class's own variant is int8, built with rpi5-profile) and one for jetson.
INT4_RPI5_SMALL = variant("int4-small", "e", size_bytes=12 * MIB, built_for="rpi5", min_ram_mb=80)
INT4_RPI5_SMALL = INT4_RPI5_SMALL.model_copy(update={"recipe": {**INT4_RPI5_SMALL.recipe, "profile": "rpi5-small"}})
FP16_BIG = variant("fp16-big", "f", size_bytes=60 * MIB, built_for="rpi5", min_ram_mb=9000)
FP16_BIG = FP16_BIG.model_copy(update={"recipe": {**FP16_BIG.recipe, "profile": "rpi5-big"}})
PROFILED = [*VARIANTS, INT4_RPI5_SMALL, FP16_BIG]


@pytest.mark.parametrize(
    ("profiles", "fields", "pin", "expected"),
    [
        ({}, {"device_class": "rpi5"}, None, "int8"),  # no profile named: the class's variant, as before
        ({"rpi5": "rpi5-small"}, {"device_class": "rpi5"}, None, "int4-small"),  # the profile's, before the class's
        ({"rpi5": "rpi5-profile"}, {"device_class": "rpi5"}, None, "int8"),
        ({"rpi5": "rpi5-big"}, {"device_class": "rpi5"}, None, "int8"),  # needs 9000 MB: today's order then
        ({"rpi5": "no-such-profile"}, {"device_class": "rpi5"}, None, "int8"),  # no variant built with it
        ({"jetson": "rpi5-small"}, {"device_class": "rpi5"}, None, "int8"),  # another class's profile
        # a class may be given another class's profile: its variant comes first, before the base
        ({"phone": "gateway-profile"}, {"device_class": "phone"}, None, "int4"),
        ({"rpi5": "rpi5-small"}, {"device_class": "rpi5"}, "int8", "int8"),  # a pin is still the only candidate
        ({"rpi5": "rpi5-small"}, {"device_class": "rpi5"}, "base", None),
    ],
)
def test_the_class_s_profile_picks_its_variant_first(
    profiles: dict[str, str], fields: dict[str, Any], pin: str | None, expected: str | None
) -> None:
    resolved = resolve(device(**fields), version(), PROFILED, pin=pin, profiles=profiles)
    assert isinstance(resolved, Target) and resolved.variant == expected


def test_a_profile_s_variant_the_device_cannot_run_is_named_in_the_exclusion() -> None:
    resolved = resolve(device(device_class="rpi5", ram_mb=64), version(), [FP16_BIG], profiles={"rpi5": "rpi5-big"})
    assert isinstance(resolved, Exclusion)
    assert resolved.reason == (
        "variant fp16-big (built for rpi5) with profile rpi5-big needs 9000 MB RAM (has 64); "
        "the base model needs 244 MB RAM (has 64)"
    )


def test_a_plan_passes_the_profiles_to_every_device() -> None:
    fleet = [device(f"r{i}", device_class="rpi5") for i in range(3)] + [device("p0", device_class="phone")]
    planned = plan(
        rollout_id="r-1",
        selector=Selector(),
        waves=[Wave(percent=100)],
        version=version(),
        variants=PROFILED,
        devices=fleet,
        profiles={"rpi5": "rpi5-small"},
    )
    assert {t.device_id: t.variant for t in planned.targets} == {
        "p0": None,
        "r0": "int4-small",
        "r1": "int4-small",
        "r2": "int4-small",
    }
