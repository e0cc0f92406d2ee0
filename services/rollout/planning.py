"""Planning a rollout: which devices, which artifact each gets, and in which wave. Pure functions of
the spec, the registry's records and the inventory, so `--dry-run` shows exactly what a start does.

1. **Selection** (`selects`): every condition of the selector holds (labels by equality, any of the
   classes and architectures, all of the accelerators, at least the RAM, one of the ids).
2. **Variant resolution** (`resolve`), per device, in this order:
   - when the rollout names an optimization profile for the device's class (`StartRollout.profiles`,
     a blueprint's `profiles`), the variant built with that profile (its recipe's `profile`), if the
     device meets its requirements: what the fleet's owner chose for the class;
   - the variant the optimizer built for the device's class (its recipe names the profile and
     class), if the device meets its requirements: it was measured against that class's budget;
   - the base model, if the device meets what it needs: it is what every variant is measured against;
   - any other variant the device can run, the smallest first: a device too small for the base
     model may still run another class's quantized variant;
   - otherwise the device is excluded, with every requirement each artifact missed.
   A pinned variant (`slmops device assign --variant`, `StartRollout.variant`) is the only candidate.
   Requirements are checked as onnxruntime defines them: a release runs every opset up to the one it
   implements (`MAX_OPSET`); contrib operators need their minimum release and the CPU execution
   provider, where their kernels live; accelerators must all be present; RAM must reach the estimate.
3. **Waves stratified by class** (`stratify`): each class is cut at every wave's cumulative share on
   its own (rounded up, so every class present gets a canary in the first wave), in an order that
   is a stable shuffle of its devices by the rollout id: another rollout picks other canaries, the
   same rollout always the same ones.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from shared.errors import InvalidRequest
from shared.messages.inventory import DeviceRecord
from shared.messages.registry import Artifact, ModelDetail, ModelVersionRecord, Requirements, VariantRecord
from shared.messages.rollout import BASE_VARIANT, Selector, StartRollout, Wave, WavePlan
from shared.selection import selects

CPU_PROVIDER = "CPUExecutionProvider"
CONTRIB_DOMAIN = "com.microsoft"
# The ai.onnx opset each onnxruntime release implements (onnxruntime's docs/Versioning.md). A
# release newer than the table is assumed to implement the last opset here, never more.
MAX_OPSET: dict[tuple[int, int], int] = {
    (1, 10): 15,
    (1, 11): 16,
    (1, 12): 17,
    (1, 13): 17,
    (1, 14): 18,
    (1, 15): 19,
    (1, 16): 19,
    (1, 17): 20,
    (1, 18): 21,
    (1, 19): 21,
    (1, 20): 21,
    (1, 21): 22,
}
# What loading a model costs beyond its file: the same estimate the optimizer records for variants
# (`services/optimizer/domain.py`): weights plus a copy during session creation, plus the runtime.
RUNTIME_OVERHEAD_MB = 64


class UnknownVariant(InvalidRequest):
    """A start pins a variant the version was not registered with."""


@dataclass(frozen=True, kw_only=True)
class Target:
    """A selected device and the artifact it is to run."""

    device_id: str
    device_class: str
    variant: str | None  # None: the base model
    artifact: Artifact
    previous_digest: str | None  # what it runs now (None: nothing installed)


@dataclass(frozen=True, kw_only=True)
class Exclusion:
    """A selected device that can run none of the version's artifacts, and why."""

    device_id: str
    device_class: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class PlannedWave:
    """The devices one wave adds (beyond the earlier waves), per class."""

    index: int
    percent: float
    device_ids: tuple[str, ...]
    by_class: Mapping[str, int]

    def contract(self) -> WavePlan:
        return WavePlan(
            index=self.index, percent=self.percent, devices=len(self.device_ids), by_class=dict(self.by_class)
        )


@dataclass(frozen=True, kw_only=True)
class Plan:
    targets: tuple[Target, ...]
    excluded: tuple[Exclusion, ...]
    waves: tuple[PlannedWave, ...]


def plan(
    *,
    rollout_id: str,
    selector: Selector,
    waves: Sequence[Wave],
    version: ModelVersionRecord,
    variants: Sequence[VariantRecord],
    devices: Iterable[DeviceRecord],
    pin: str | None = None,
    profiles: Mapping[str, str] | None = None,
) -> Plan:
    """The whole plan: selected devices resolved to artifacts (to `pin`, a variant's name or
    `BASE_VARIANT`, when given; preferring the variant of the class's profile in `profiles`) or
    excluded, then cut into waves."""
    targets: list[Target] = []
    excluded: list[Exclusion] = []
    for device in sorted((d for d in devices if selects(selector, d)), key=lambda d: d.device_id):
        resolved = resolve(device, version, variants, pin=pin, profiles=profiles)
        if isinstance(resolved, Target):
            targets.append(resolved)
        else:
            excluded.append(resolved)
    return Plan(
        targets=tuple(targets), excluded=tuple(excluded), waves=tuple(stratify(waves, targets, seed=rollout_id))
    )


def plan_start(cmd: StartRollout, detail: ModelDetail, devices: Iterable[DeviceRecord], *, rollout_id: str) -> Plan:
    """The plan of a `rollout.start` (what the service stores and `--dry-run` prints alike).

    Raises:
        UnknownVariant: the command pins a variant the version does not have.
    """
    known = [v.variant for v in detail.variants]
    if cmd.variant is not None and cmd.variant != BASE_VARIANT and cmd.variant not in known:
        raise UnknownVariant(
            f"{cmd.model} {detail.version.version} has no variant {cmd.variant!r}; "
            f"variants: {', '.join([BASE_VARIANT, *known])}"
        )
    return plan(
        rollout_id=rollout_id,
        selector=cmd.selector,
        waves=cmd.waves,
        version=detail.version,
        variants=detail.variants,
        devices=devices,
        pin=cmd.variant,
        profiles=cmd.profiles,
    )


def resolve(
    device: DeviceRecord,
    version: ModelVersionRecord,
    variants: Sequence[VariantRecord],
    *,
    pin: str | None = None,
    profiles: Mapping[str, str] | None = None,
) -> Target | Exclusion:
    """The artifact `device` gets (see the module docstring for the order, or only `pin`), or why it
    gets none. `profiles` maps a device class to the optimization profile its variant is preferred from."""
    profile = (profiles or {}).get(device.device_class)
    chosen: list[VariantRecord] = []
    rest: list[VariantRecord] = []
    for v in variants:
        (chosen if profile is not None and v.profile == profile else rest).append(v)
    chosen.sort(key=lambda v: (built_for(v) != device.device_class, v.artifact.size_bytes))
    own = [v for v in rest if built_for(v) == device.device_class]
    others = sorted((v for v in rest if built_for(v) != device.device_class), key=lambda v: v.artifact.size_bytes)
    candidates: list[tuple[str, VariantRecord | None, Requirements]] = [
        *((f"{_described(v)} with profile {profile}", v, v.requirements) for v in chosen),
        *((_described(v), v, v.requirements) for v in own),
        ("the base model", None, base_requirements(version)),
        *((_described(v), v, v.requirements) for v in others),
    ]
    if pin is not None:
        candidates = [c for c in candidates if (c[1].variant if c[1] else BASE_VARIANT) == pin]
    misses = []
    for label, variant, needs in candidates:
        missing = unmet(needs, device)
        if not missing:
            return Target(
                device_id=device.device_id,
                device_class=device.device_class,
                variant=variant.variant if variant else None,
                artifact=variant.artifact if variant else version.artifact,
                previous_digest=device.active_digest,
            )
        misses.append(f"{label} needs {', '.join(missing)}")
    return Exclusion(device_id=device.device_id, device_class=device.device_class, reason="; ".join(misses))


def _described(variant: VariantRecord) -> str:
    cls = built_for(variant)
    return f"variant {variant.variant}" + (f" (built for {cls})" if cls else "")


def built_for(variant: VariantRecord) -> str | None:
    """The device class the optimizer built a variant for (its recipe's `device_class`, or the
    profile's name, which is the class's in `deploy/profiles`); None for a variant from elsewhere."""
    for key in ("device_class", "profile"):
        value = variant.recipe.get(key)
        if isinstance(value, str):
            return value
    return None


def base_requirements(version: ModelVersionRecord) -> Requirements:
    """What the base model needs, from the registry's reading of the file: its default-domain opset,
    its contrib operators, and the RAM estimate variants are given."""
    contrib = sorted(op for op in version.onnx.op_types if op.startswith(CONTRIB_DOMAIN + "."))
    return Requirements(
        opset=version.onnx.opsets.get("") or None,
        contrib_ops=contrib,
        min_ram_mb=math.ceil(2 * version.artifact.size_bytes / 1024**2) + RUNTIME_OVERHEAD_MB,
    )


def unmet(needs: Requirements, device: DeviceRecord) -> list[str]:
    """Each requirement the device misses, in words (`onnxruntime >= 1.17 (has 1.16.3)`); empty: it fits."""
    missing = []
    runtime = release(device.onnxruntime_version)
    if needs.min_onnxruntime and runtime < release(needs.min_onnxruntime):
        missing.append(f"onnxruntime >= {needs.min_onnxruntime} (has {device.onnxruntime_version})")
    if needs.opset and needs.opset > max_opset(device.onnxruntime_version):
        missing.append(
            f"opset {needs.opset} (onnxruntime {device.onnxruntime_version} implements up to "
            f"{max_opset(device.onnxruntime_version)})"
        )
    if needs.contrib_ops and device.execution_providers and CPU_PROVIDER not in device.execution_providers:
        missing.append(f"the {CPU_PROVIDER} for {', '.join(needs.contrib_ops)}")
    if needs.min_ram_mb and device.ram_mb < needs.min_ram_mb:
        missing.append(f"{needs.min_ram_mb} MB RAM (has {device.ram_mb})")
    if absent := sorted(set(needs.accelerators) - set(device.accelerators)):
        missing.append(f"accelerator {', '.join(absent)}")
    return missing


@functools.lru_cache(maxsize=256)
def release(version: str) -> tuple[int, int, int]:
    """`1.20.1` -> (1, 20, 1); a missing patch is 0."""
    major, minor, *patch = (int(p) for p in version.split("."))
    return major, minor, patch[0] if patch else 0


@functools.lru_cache(maxsize=256)
def max_opset(onnxruntime_version: str) -> int:
    """The newest ai.onnx opset a release implements (0 for one older than the table)."""
    major, minor, _ = release(onnxruntime_version)
    known = [opset for (ma, mi), opset in MAX_OPSET.items() if (ma, mi) <= (major, minor)]
    return max(known, default=0)


def stratify(waves: Sequence[Wave], targets: Sequence[Target], *, seed: str) -> list[PlannedWave]:
    """Cut each class's devices at every wave's cumulative share (see the module docstring)."""
    by_class: dict[str, list[str]] = defaultdict(list)
    for target in targets:
        by_class[target.device_class].append(target.device_id)
    order = {name: sorted(ids, key=lambda i: _shuffled(seed, i)) for name, ids in by_class.items()}
    planned = []
    done = dict.fromkeys(order, 0)
    for index, wave in enumerate(waves):
        added: list[str] = []
        counts: dict[str, int] = {}
        for name in sorted(order):
            ids = order[name]
            upto = len(ids) if wave.percent >= 100 else min(len(ids), max(1, math.ceil(len(ids) * wave.percent / 100)))
            new = ids[done[name] : upto]
            if new:
                counts[name] = len(new)
                added.extend(new)
            done[name] = max(done[name], upto)
        planned.append(PlannedWave(index=index, percent=wave.percent, device_ids=tuple(added), by_class=counts))
    return planned


def _shuffled(seed: str, device_id: str) -> bytes:
    return hashlib.sha256(f"{seed}/{device_id}".encode()).digest()
