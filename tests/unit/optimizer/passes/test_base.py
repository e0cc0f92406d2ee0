"""The pass template: registry, build_pass, and the input/output checks every pass gets."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

import services.optimizer.passes as passes
from services.optimizer.errors import InvalidPassConfig, PassError, UnknownPass
from services.optimizer.passes import PassContext, build_pass, registered_passes
from services.optimizer.passes import base as base_module
from shared.messages.optimizer import PassSpec

TECHNIQUES = {
    "ActivationSmoothing",
    "Float16Conversion",
    "Int4WeightOnlyQuantization",
    "MagnitudePruning",
    "OnnxDynamicQuantization",
    "OnnxStaticQuantization",
    "OrtGraphOptimization",
}


def test_every_technique_registers_itself() -> None:
    assert set(registered_passes()) == TECHNIQUES


def test_exported_names_are_pinned() -> None:
    exported = set(passes.__all__)
    assert TECHNIQUES <= exported
    assert {"OptimizationPass", "PassConfig", "PassContext", "PassResult", "build_pass"} <= exported
    assert all(hasattr(passes, name) for name in exported)


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_every_config_field_has_a_default_and_a_description(name: str) -> None:
    config = registered_passes()[name].Config
    for field_name, field in config.model_fields.items():
        assert not field.is_required(), f"{name}.{field_name} has no default"
        assert field.description, f"{name}.{field_name} has no description"
    assert config.model_config.get("extra") == "forbid" and config.model_config.get("frozen") is True


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_spec_round_trips_with_defaults_filled_in(name: str) -> None:
    built = build_pass(PassSpec(type=name))
    assert built.spec().config == built.config.model_dump(mode="json")
    assert build_pass(built.spec()).config == built.config


def test_unknown_pass_lists_known_types() -> None:
    with pytest.raises(UnknownPass) as caught:
        build_pass(PassSpec(type="OnnxQuantise"))
    assert "unknown pass type 'OnnxQuantise'" in str(caught.value)
    assert "OnnxDynamicQuantization" in str(caught.value) and "MagnitudePruning" in str(caught.value)


def test_invalid_config_names_each_field_and_the_known_fields() -> None:
    spec = PassSpec(type="OnnxDynamicQuantization", config={"per_chanel": True, "weight_type": "int3"})
    with pytest.raises(InvalidPassConfig) as caught:
        build_pass(spec)
    message = str(caught.value)
    assert "weight_type: Input should be 'qint8' or 'quint8'" in message
    assert "per_chanel: Extra inputs are not permitted" in message
    assert "takes: per_channel, reduce_range" in message


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"block_size": 48}, "block_size: Value error, must be a power of two, got 48"),
        ({"quant_axes": {"MatMul": 1}}, "along axis 0 only"),
        ({"op_types_to_quantize": ["Conv"]}, "op_types_to_quantize.0"),
    ],
)
def test_int4_config_is_validated(config: dict[str, object], problem: str) -> None:
    with pytest.raises(InvalidPassConfig, match=problem):
        build_pass(PassSpec(type="Int4WeightOnlyQuantization", config=config))


def test_pruning_sparsity_is_bounded() -> None:
    with pytest.raises(InvalidPassConfig, match="sparsity"):
        build_pass(PassSpec(type="MagnitudePruning", config={"sparsity": 0.99}))


def test_static_op_types_must_be_qdq_quantizable() -> None:
    with pytest.raises(InvalidPassConfig, match="not QDQ-quantizable: Softmax"):
        build_pass(PassSpec(type="OnnxStaticQuantization", config={"op_types_to_quantize": ["MatMul", "Softmax"]}))


def _graph_pass() -> base_module.OptimizationPass[base_module.PassConfig]:
    return build_pass(PassSpec(type="OrtGraphOptimization"))


def test_missing_input_is_a_pass_error(tmp_path: Path, context: PassContext) -> None:
    with pytest.raises(PassError, match="does not exist"):
        _graph_pass().run(tmp_path / "absent.onnx", tmp_path / "out.onnx", context=context)


def test_bytes_that_are_not_onnx_are_a_pass_error(tmp_path: Path, context: PassContext) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\xffnot a protobuf at all" * 10)
    with pytest.raises(PassError, match="pass OrtGraphOptimization: input is not an ONNX model"):
        _graph_pass().run(junk, tmp_path / "out.onnx", context=context)


def test_model_over_the_size_limit_is_refused(
    embedder: Path, tmp_path: Path, context: PassContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base_module, "MAX_MODEL_BYTES", 1024)
    with pytest.raises(PassError, match="over the 1,024-byte limit"):
        _graph_pass().run(embedder, tmp_path / "out.onnx", context=context)


def test_invalid_model_fails_the_checker(tmp_path: Path, context: PassContext) -> None:
    node = helper.make_node("Relu", ["nowhere"], ["y"])
    graph = helper.make_graph(
        [node], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], initializer=[]
    )
    path = tmp_path / "invalid.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(PassError, match="input fails onnx.checker"):
        _graph_pass().run(path, tmp_path / "out.onnx", context=context)


def test_unsupported_operator_fails_with_its_name(tmp_path: Path, context: PassContext) -> None:
    node = helper.make_node("Mystery", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    with pytest.raises(PassError, match="Mystery") as caught:
        _graph_pass().run(path, tmp_path / "out.onnx", context=context)
    assert "pass OrtGraphOptimization: onnxruntime graph optimization failed" in str(caught.value)


def test_external_data_is_refused(embedder: Path, tmp_path: Path, context: PassContext) -> None:
    path = tmp_path / "external.onnx"
    onnx.save(onnx.load(str(embedder)), str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    with pytest.raises(PassError, match="external data"):
        _graph_pass().run(path, tmp_path / "out.onnx", context=context)


def test_resolve_nodes_takes_names_and_globs() -> None:
    model = onnx.ModelProto()
    model.graph.node.extend(
        [helper.make_node("MatMul", ["a", "b"], ["c"], name=n) for n in ("l0.q.MatMul", "l0.k.MatMul", "l1.q.MatMul")]
    )
    matched, unmatched = base_module.resolve_nodes(model, ["*.q.MatMul", "l0.k.MatMul", "nothing*"])
    assert matched == ["l0.q.MatMul", "l0.k.MatMul", "l1.q.MatMul"]
    assert unmatched == ["nothing*"]
