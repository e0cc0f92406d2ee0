"""The message catalogue as a contract: every type round-trips and rejects bad input with a reason a
sender can act on (the JSON Schema export of the same samples is tests/unit/shared/test_schema.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from shared import histogram, subjects
from shared.messages.blueprint import Blueprint
from shared.messages.blueprint_api import (
    ApplyBlueprints,
    BlueprintApplied,
    BlueprintReconciled,
    DeleteBlueprint,
    GetBlueprint,
    ListBlueprints,
    ReconcileAction,
)
from shared.messages.common import ObjectRef
from shared.messages.device import (
    SIMILARITY_BOUNDS,
    DesiredState,
    DeviceHello,
    DeviceStatus,
    ExponentialLatency,
    LatencyHistogram,
    OutputMoments,
    ShadowAgreement,
    SimilarityHistogram,
    TelemetryWindow,
    TelemetryWindowV1,
)
from shared.messages.envelope import InvalidMessage, Message, decode, encode, message_types, wrap
from shared.messages.optimizer import (
    Budgets,
    Candidate,
    CandidateMetrics,
    DeviceProfile,
    ListProfiles,
    OptimizationCompleted,
    OptimizationFailed,
    OptimizationProgress,
    OptimizeModel,
    PassSpec,
    Recipe,
    RegisteredVariant,
)
from shared.messages.registry import (
    AliasChanged,
    Artifact,
    GetAliases,
    GetDownloadUrl,
    GetModel,
    GetPublicKey,
    ListModels,
    ModelRegistered,
    ModelVersionRecord,
    OnnxInfo,
    RegisterModel,
    RegisterVariant,
    Requirements,
    SetAlias,
    TensorSpec,
    VariantRecord,
    VariantRegistered,
)
from shared.messages.rollout import (
    AbortRollout,
    Gate,
    GateVerdict,
    PauseRollout,
    ResumeRollout,
    RollbackRollout,
    RolloutCompleted,
    RolloutRolledBack,
    RolloutStarted,
    RolloutStateChanged,
    StartRollout,
    WaveCompleted,
    WavePlan,
    WaveStarted,
)
from shared.messages.telemetry import (
    Cohort,
    CohortStats,
    DriftDetected,
    EvaluateGate,
    ListReporters,
    OutputSummary,
    Summarize,
    TelemetryRollup,
)

D1, D2 = "1" * 64, "2" * 64
T0 = datetime(2026, 11, 29, 17, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)
ENVELOPE_FIELDS = {"type", "schema_version", "id", "time", "source", "data"}

_ONNX = OnnxInfo(
    ir_version=9,
    opsets={"": 17},
    inputs=[TensorSpec(name="ids", dtype="int64", shape=["batch", 128])],
    outputs=[TensorSpec(name="emb", dtype="float32", shape=["batch", 384])],
    parameters=22_700_000,
    op_types=["Gather", "MatMul"],
)
_ARTIFACT = Artifact(digest=D1, size_bytes=90_000_000, key=f"blobs/sha256/{D1}", signature="c2ln")
_METRICS = CandidateMetrics(
    size_bytes=23_000_000,
    compressed_size_bytes=20_000_000,
    latency_p50_ms=2.1,
    latency_p95_ms=3.4,
    threads=1,
    fidelity={"cosine_mean": 0.995, "cosine_min": 0.982},
    meets_budget=True,
)
_INT8 = Recipe(name="int8-per-channel", passes=[PassSpec(type="OnnxDynamicQuantization", config={"per_channel": True})])
_PROFILE = DeviceProfile(
    name="rpi5",
    device_class="rpi5",
    speed_factor=4.0,
    budgets=Budgets(max_size_bytes=30_000_000, max_p95_latency_ms=40, min_fidelity={"cosine_mean": 0.99}),
    recipes=[_INT8],
)
_HISTOGRAM = LatencyHistogram(bounds_ms=[5, 10, 50], counts=[80, 15, 4, 1])
_LATENCY = ExponentialLatency.of(histogram.of([3.0] * 80 + [8.0] * 15 + [20.0] * 4 + [60.0], scale=4))
_SIMILARITY = SimilarityHistogram(reference_requests=64, counts=[0] * (len(SIMILARITY_BOUNDS) - 3) + [10, 60, 20, 8])
_PLAN = WavePlan(index=0, percent=1, devices=3, by_class={"rpi5": 2, "jetson": 1})

_GATE = {"metric": "error_rate", "comparator": "<=", "threshold": 0.01}
_BLUEPRINT = Blueprint.model_validate(
    {
        "apiVersion": "slmops.dev/v1",
        "kind": "Blueprint",
        "metadata": {"name": "demo-fleet"},
        # Nothing a test registers or enrols: the fuzz test sends this sample (dry_run dropped, too) to
        # a running blueprints service, which must refuse it rather than roll the session's devices.
        "spec": {"selector": {"labels": {"fleet": "no-such-fleet"}}, "model": "never-registered", "track": "stable"},
    }
)
_COHORT_STATS = CohortStats(
    cohort=Cohort(model_digest=D1, device_class="rpi5", rollout_id="r1", wave=0),
    since=T0,
    until=T1,
    windows=12,
    devices=4,
    requests=480,
    errors=1,
    error_rate=1 / 480,
    latency_p50_ms=7.1,
    latency_p95_ms=11.8,
    latency_p99_ms=14.0,
    latency_relative_error=0.0217,
    outputs={"norm": OutputSummary(count=479, mean=1.0, std=0.01)},
    shadow_compared=0,
    cpu_percent_mean=12.0,
    cpu_percent_max=20.0,
    ram_mb_mean=300.0,
    ram_mb_max=310.0,
)
SAMPLES: dict[str, Message] = {
    m.TYPE: m
    for m in [
        RegisterModel(name="minilm", version="1.0", artifact=ObjectRef(key="incoming/u/m.onnx")),
        RegisterVariant(name="minilm", version="1.0", variant="int8", artifact=ObjectRef(key="k")),
        SetAlias(name="minilm", alias="stable", version="1.0"),
        ModelRegistered(
            record=ModelVersionRecord(
                name="minilm", version="1.0", artifact=_ARTIFACT, onnx=_ONNX, registered_at=T0, command_id="c1"
            )
        ),
        VariantRegistered(
            record=VariantRecord(
                name="minilm",
                version="1.0",
                variant="int8",
                parent_digest=D2,
                artifact=_ARTIFACT,
                onnx=_ONNX,
                requirements=Requirements(min_onnxruntime="1.18", contrib_ops=["MatMulNBits"]),
                registered_at=T0,
                command_id="c2",
            )
        ),
        AliasChanged(name="minilm", alias="stable", version="1.1", previous="1.0"),
        ListModels(),
        GetModel(name="minilm"),
        GetAliases(name="minilm"),
        GetDownloadUrl(digest=D1),
        GetPublicKey(),
        DeviceHello(
            device_id="rpi5-0001",
            device_class="rpi5",
            arch="aarch64",
            ram_mb=8192,
            cpu_count=4,
            onnxruntime_version="1.20.1",
            execution_providers=["CPUExecutionProvider"],
            labels={"site": "lyon", "fleet.example.com/ring": "canary"},
            agent_version="0.1.0",
        ),
        DeviceStatus(
            device_id="rpi5-0001",
            desired_revision=7,
            digest=D1,
            step="active",
            slot="b",
            active_digest=D1,
            config_digest=D2,
        ),
        TelemetryWindow(
            device_id="rpi5-0001",
            device_class="rpi5",
            model_digest=D1,
            rollout_id="r1",
            wave=0,
            window_start=T0,
            window_end=T1,
            request_count=100,
            error_count=2,
            latency=_LATENCY,
            outputs={
                "norm": OutputMoments(count=98, mean=1.0, variance=1e-12),
                "value": OutputMoments(count=98 * 384, mean=0.001, variance=0.0026),
            },
            similarity=_SIMILARITY,
            shadow=ShadowAgreement(previous_digest=D2, compared=50, agreement_rate=0.98),
            cpu_percent=37.5,
            ram_mb=412.0,
        ),
        OptimizeModel(name="minilm", version="1.0", profile="rpi5"),
        ListProfiles(),
        OptimizationProgress(
            optimization_id="c3",
            name="minilm",
            version="1.0",
            candidate=_INT8.name,
            stage="evaluated",
            completed=1,
            total=3,
            metrics=_METRICS,
        ),
        OptimizationCompleted(
            optimization_id="c3",
            name="minilm",
            version="1.0",
            base_digest=D2,
            profile=_PROFILE,
            registered=[RegisteredVariant(variant="rpi5-int8", digest=D1, recipe=_INT8.name, metrics=_METRICS)],
            candidates=[Candidate(recipe=_INT8, metrics=_METRICS, pareto=True)],
        ),
        OptimizationFailed(optimization_id="c4", name="minilm", version="1.0", reason="model has no evaluation set"),
        StartRollout(
            model="minilm",
            ref="stable",
            gates=[Gate(metric="error_rate", comparator="<=", threshold=0.01)],
            profiles={"rpi5": "rpi5"},
            config={"lang": "de", "thresholds": {"match": 0.8}},
        ),
        PauseRollout(rollout_id="r1", reason="weekend"),
        ResumeRollout(rollout_id="r1"),
        AbortRollout(rollout_id="r1"),
        RollbackRollout(rollout_id="r1", reason="customer complaint"),
        RolloutStarted(
            rollout_id="r1", spec=StartRollout(model="minilm", ref="stable"), version="1.1", targets=300, plan=[_PLAN]
        ),
        RolloutStateChanged(rollout_id="r1", from_state="installing", to_state="soaking", wave=0),
        WaveStarted(rollout_id="r1", wave=_PLAN),
        WaveCompleted(rollout_id="r1", wave=0, percent=1, devices=3, installed=3, failed=0, verdict="Successful"),
        GateVerdict(
            rollout_id="r1",
            wave=0,
            metric="error_rate",
            comparator="<=",
            threshold=0.01,
            observed=0.002,
            samples=5000,
            min_samples=100,
            verdict="Successful",
        ),
        RolloutCompleted(rollout_id="r1", model="minilm", version="1.1", devices=300, by_digest={D1: 300}),
        RolloutRolledBack(rollout_id="r1", trigger="gate", wave=1, reason="error_rate 0.09 > 0.01", devices=30),
        DriftDetected(
            model_digest=D1,
            metric="output.norm_mean",
            method="zscore",
            reference=1.0,
            current=1.4,
            score=4.2,
            threshold=3.0,
            devices=120,
            window_start=T0,
            window_end=T1,
        ),
        TelemetryRollup(stats=_COHORT_STATS),
        EvaluateGate(
            rollout_id="r1",
            wave=0,
            since=T0,
            until=T1,
            gate=Gate(metric="latency_p95_ms", comparator="<=", threshold=1.1, compare_to_baseline="mann_whitney"),
            digests=[D1],
            baseline_digests=[D2],
        ),
        Summarize(model_digest=D1, seconds=600),
        ListReporters(rollout_id="r-1", wave=2, digests=[D1], after="dev-0009", limit=500),
        ApplyBlueprints(blueprints=[_BLUEPRINT], dry_run=True, source="fleet.yaml"),
        DeleteBlueprint(name="demo-fleet"),
        ListBlueprints(),
        GetBlueprint(name="demo-fleet"),
        BlueprintApplied(name="demo-fleet", action="created", generation=1, digest=D1),
        BlueprintReconciled(
            name="demo-fleet",
            generation=1,
            version="1.1",
            actions=[ReconcileAction(kind="start_rollout", detail="rollout of 1.1", version="1.1", devices=30)],
            converged=0,
            pending=30,
            summary="started a rollout of 1.1 over 30 devices",
        ),
    ]
}


# Earlier schema versions still accepted (SAMPLES holds the newest of every type).
EARLIER_SAMPLES: list[Message] = [
    TelemetryWindowV1(
        device_id="rpi5-0001",
        model_digest=D1,
        window_start=T0,
        window_end=T1,
        request_count=100,
        error_count=2,
        latency=_HISTOGRAM,
        output_stats={"norm_mean": 1.0, "norm_std": 0.02},
        shadow=ShadowAgreement(previous_digest=D2, compared=50, agreement_rate=0.98),
        cpu_percent=37.5,
        ram_mb=412.0,
    )
]
EVERY_SAMPLE = {(m.TYPE, m.SCHEMA_VERSION): m for m in [*SAMPLES.values(), *EARLIER_SAMPLES]}


def test_every_catalogued_type_and_version_has_a_sample_here() -> None:
    assert set(EVERY_SAMPLE) == set(message_types())
    assert all(m.SCHEMA_VERSION < SAMPLES[m.TYPE].SCHEMA_VERSION for m in EARLIER_SAMPLES)


@pytest.mark.parametrize("key", sorted(EVERY_SAMPLE), ids=lambda k: f"{k[0]}.v{k[1]}")
def test_every_payload_type_round_trips(key: tuple[str, int]) -> None:
    sample = EVERY_SAMPLE[key]
    back = decode(encode(wrap(sample, source="tests")))
    assert (back.type, back.schema_version) == key and back.data == sample and type(back.data) is type(sample)


def _status(**over: Any) -> dict[str, Any]:
    return {"device_id": "dev-1", "desired_revision": 1, "digest": D1, "step": "downloading"} | over


def _window(**over: Any) -> dict[str, Any]:
    base = SAMPLES["telemetry.window"].model_dump(mode="json", exclude={"shadow"})
    return base | over


def _window_v1(**over: Any) -> dict[str, Any]:
    base = EARLIER_SAMPLES[0].model_dump(mode="json", exclude={"shadow"})
    return base | over


@pytest.mark.parametrize(
    ("model", "data", "reason"),
    [
        (LatencyHistogram, {"bounds_ms": [5, 10], "counts": [1, 2]}, "counts must have len(bounds_ms) + 1 = 3"),
        (LatencyHistogram, {"bounds_ms": [10, 5], "counts": [0, 0, 0]}, "strictly increasing"),
        (TelemetryWindowV1, _window_v1(request_count=99), "latency counts sum to 100, not request_count (99)"),
        (TelemetryWindowV1, _window_v1(error_count=101), "error_count (101) exceeds request_count"),
        (TelemetryWindowV1, _window_v1(window_end=T0.isoformat()), "window_end must be after window_start"),
        (TelemetryWindowV1, _window_v1(inputs=[[1, 2, 3]]), "inputs\n  Extra inputs are not permitted"),
        (TelemetryWindow, _window(request_count=99), "latency counts sum to 100, not request_count (99)"),
        (TelemetryWindow, _window(error_count=101), "error_count (101) exceeds request_count"),
        (TelemetryWindow, _window(window_end=T0.isoformat()), "window_end must be after window_start"),
        (TelemetryWindow, _window(wave=None), "rollout_id and wave go together"),
        (TelemetryWindow, _window(error_count=10), "similarity counts sum to 98, more than the 90 requests served"),
        (TelemetryWindow, _window(outputs={"norm": {"count": 0, "mean": 1.0, "variance": 0.0}}), "outputs.norm.count"),
        (TelemetryWindow, _window(output_stats={"norm_mean": 1.0}), "output_stats\n  Extra inputs are not permitted"),
        (TelemetryWindow, _window(inputs=[[1, 2, 3]]), "inputs\n  Extra inputs are not permitted"),
        (StartRollout, {"model": "m", "ref": "1", "waves": [{"percent": 10}, {"percent": 5}]}, "strictly increasing"),
        (StartRollout, {"model": "m", "ref": "1", "waves": [{"percent": 10}, {"percent": 50}]}, "must be 100 percent"),
        (Gate, {"metric": "vibes", "comparator": "<", "threshold": 1}, "unknown gate metric 'vibes'"),
        (DeviceStatus, _status(step="installing"), "Input should be 'received', 'downloading'"),
        (DeviceStatus, _status(step="failed"), "step 'failed' needs a reason"),
        (CandidateMetrics, _METRICS.model_dump() | {"meets_budget": False}, "meets_budget must be true exactly"),
        (Candidate, {"recipe": _INT8.model_dump()}, "either metrics or an error"),
        (
            Gate,
            {"metric": "error_rate", "comparator": "<=", "threshold": 1.1, "compare_to_baseline": "mann_whitney"},
            "mann_whitney compares latency distributions",
        ),
        (
            Gate,
            {"metric": "latency_p95_ms", "comparator": ">", "threshold": 1.1, "compare_to_baseline": "mann_whitney"},
            "use < or <=",
        ),
        (
            EvaluateGate,
            {"rollout_id": "r1", "wave": 0, "since": T1.isoformat(), "until": T0.isoformat(), "gate": _GATE},
            "until must be after since",
        ),
        (EvaluateGate, {"rollout_id": "r.1", "wave": 0, "since": T0.isoformat(), "gate": _GATE}, "rollout_id"),
        (Summarize, {"seconds": 0}, "seconds\n  Input should be greater than 0"),
    ],
    ids=[
        "histogram-length",
        "histogram-order",
        "v1-histogram-sum",
        "v1-errors",
        "v1-window",
        "v1-raw-inputs",
        "histogram-sum",
        "errors",
        "window",
        "rollout-without-wave",
        "similarity-over-served",
        "moments-without-values",
        "v1-field-in-v2",
        "raw-inputs",
        "waves-order",
        "waves-end",
        "gate-metric",
        "unknown-step",
        "failed-no-reason",
        "budget-verdict",
        "candidate",
        "mann-whitney-metric",
        "mann-whitney-comparator",
        "gate-range",
        "gate-rollout-token",
        "summary-seconds",
    ],
)
def test_validators_reject_with_a_clear_reason(model: type[Any], data: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError) as err:
        model.model_validate(data)
    assert reason in str(err.value)


@pytest.mark.parametrize("bad", ["a.b", "*", ">", "has space", "", "x" * 65, "ünï", "dev-1\n"])
def test_device_ids_must_be_subject_tokens(bad: str) -> None:
    with pytest.raises(ValidationError, match="device_id"):
        DeviceStatus.model_validate(_status(device_id=bad))


def test_every_valid_device_id_is_a_valid_subject_token() -> None:
    device_id = "A-z_09" + "x" * 58
    DeviceStatus.model_validate(_status(device_id=device_id))
    assert subjects.device_status(device_id) == f"slmops.device.{device_id}.status"


def test_a_bad_status_on_the_wire_gets_a_dlq_reason_naming_the_field() -> None:
    raw = encode(wrap(SAMPLES["device.status"], source="dev")).replace(b'"active"', b'"installing"', 1)
    with pytest.raises(InvalidMessage, match=r"invalid 'device.status' data: step: Input should be"):
        decode(raw)


def test_optimize_accepts_a_profile_name_or_an_inline_profile() -> None:
    by_name = OptimizeModel.model_validate({"name": "m", "version": "1", "profile": "rpi5"})
    inline = OptimizeModel.model_validate({"name": "m", "version": "1", "profile": _PROFILE.model_dump()})
    assert by_name.profile == "rpi5" and inline.profile == _PROFILE
    with pytest.raises(ValidationError):
        OptimizeModel.model_validate({"name": "m", "version": "1", "profile": "Not A Name"})


def test_desired_state_is_a_versioned_kv_value() -> None:
    state = DesiredState(
        device_id="rpi5-0001",
        model="minilm",
        version="1.1",
        digest=D1,
        size_bytes=1,
        signature="c2ln",
        issued_at=T0,
        traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    )
    raw = state.model_dump_json()
    assert json.loads(raw)["schema_version"] == 1 and DesiredState.model_validate_json(raw) == state
    with pytest.raises(ValidationError, match="schema_version"):
        DesiredState.model_validate(json.loads(raw) | {"schema_version": 2})
    with pytest.raises(ValidationError, match="traceparent"):
        DesiredState.model_validate(json.loads(raw) | {"traceparent": "not-a-trace"})
