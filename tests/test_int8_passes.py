"""The declared INT8 pass list: each pass on its smallest graph (structure and unchanged results under ONNX
Runtime), the order the report records, and switching passes off."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from cdarts_deploy.deploy import int8_passes as ip
from cdarts_deploy.deploy import precision as pr

RNG = np.random.default_rng(0)


def _weights(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def _model(nodes, inits, shape, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(model)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _apply(name: str, model: onnx.ModelProto, x: np.ndarray) -> tuple[int, onnx.ModelProto]:
    """Run the pass called ``name`` alone; check that the rewritten graph is valid and computes the same."""
    before = _run(model, x)
    chosen = next(p for p in ip.PASSES if p.name == name)
    count = chosen.run(model, ip.PassState())
    onnx.checker.check_model(model)
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-5, atol=1e-5)
    return count, model


def test_private_relu_inputs_on_a_relu_of_a_shared_tensor():
    model = _model([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                    helper.make_node("Add", ["x", "r"], ["y"], name="add")], [], [1, 4, 3, 3])
    count, model = _apply("private_relu_inputs", model, RNG.standard_normal((1, 4, 3, 3)).astype(np.float32))
    assert count == 1 and _ops(model) == ["Mul", "Relu", "Add"] and ip.shared_input_relus(model) == []


def test_pad_depthwise_channels_on_conv_relu_depthwise_conv():
    model = _model([helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="c1"),
                    helper.make_node("Relu", ["c"], ["r"], name="relu"),
                    helper.make_node("Conv", ["r", "dw", "db"], ["d"], name="dw", group=8, kernel_shape=[3, 3],
                                     pads=[1, 1, 1, 1]),
                    helper.make_node("Conv", ["d", "w2", "b2"], ["y"], name="c2")],
                   [_weights("w1", 8, 4, 1, 1), _weights("b1", 8), _weights("dw", 8, 1, 3, 3), _weights("db", 8),
                    _weights("w2", 4, 8, 1, 1), _weights("b2", 4)], [1, 4, 5, 5])
    count, model = _apply("pad_depthwise_channels", model, RNG.standard_normal((1, 4, 5, 5)).astype(np.float32))
    dw = next(n for n in model.graph.node if n.name == "dw")
    # the producing convolution computes the zero channels: no widening copy is added
    assert count == 1 and _ops(model) == ["Conv", "Relu", "Conv", "Conv"]
    assert next(a.i for a in dw.attribute if a.name == "group") == ip.DEPTHWISE_CHANNEL_ALIGN


def test_factorized_reductions_as_single_convs_on_slice_pad_concat_batchnorm():
    starts, ends, axes = (numpy_helper.from_array(np.array(v, np.int64), n)
                          for n, v in (("s", [1, 1]), ("e", [2**62, 2**62]), ("a", [2, 3])))
    model = _model([helper.make_node("Conv", ["x", "wa"], ["a0"], name="ca", strides=[2, 2]),
                    helper.make_node("Slice", ["x", "s", "e", "a"], ["shifted"], name="shift"),
                    helper.make_node("Pad", ["shifted", "p"], ["padded"], name="pad"),
                    helper.make_node("Conv", ["padded", "wb"], ["b0"], name="cb", strides=[2, 2]),
                    helper.make_node("Concat", ["a0", "b0"], ["cat"], name="cat", axis=1),
                    helper.make_node("BatchNormalization", ["cat", "g", "be", "m", "v"], ["y"], name="bn")],
                   [_weights("wa", 3, 4, 1, 1), _weights("wb", 3, 4, 1, 1), starts, ends, axes,
                    numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "p"),
                    _weights("g", 6), _weights("be", 6), _weights("m", 6),
                    numpy_helper.from_array(np.abs(RNG.standard_normal(6)).astype(np.float32) + 0.5, "v")],
                   [1, 4, 6, 6])
    count, model = _apply("factorized_reductions_as_single_convs", model,
                          RNG.standard_normal((1, 4, 6, 6)).astype(np.float32))
    assert count == 1 and _ops(model) == ["Conv"]
    assert [list(a.ints) for a in model.graph.node[0].attribute if a.name == "kernel_shape"] == [[2, 2]]


def test_spatial_means_to_global_pools_on_one_reduce_mean():
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    model = _model([helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean", keepdims=1)], [axes],
                   [2, 4, 3, 5], opset=18)
    count, model = _apply("spatial_means_to_global_pools", model,
                          RNG.standard_normal((2, 4, 3, 5)).astype(np.float32))
    assert count == 1 and _ops(model) == ["GlobalAveragePool"]


def test_average_pools_as_depthwise_convs_on_one_padded_pool():
    model = _model([helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[3, 3],
                                     pads=[1, 1, 1, 1])], [], [1, 4, 5, 5])
    state = ip.PassState()
    before = _run(model, x := RNG.standard_normal((1, 4, 5, 5)).astype(np.float32))
    assert next(p for p in ip.PASSES if p.name == "average_pools_as_depthwise_convs").run(model, state) == 1
    onnx.checker.check_model(model)
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-5, atol=1e-6)
    # padded pixels are left out of the count: a border factor the quantizer gets an exact scale for
    assert _ops(model) == ["Conv", "Mul"] and list(state.corrections.values()) == [0.25]


def test_hard_sigmoids_into_convs_on_conv_hard_sigmoid():
    model = _model([helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
                    helper.make_node("HardSigmoid", ["c"], ["y"], name="gate", alpha=1 / 6, beta=0.5)],
                   [_weights("w", 4, 4, 1, 1), _weights("b", 4)], [3, 4, 1, 1])
    count, model = _apply("hard_sigmoids_into_convs", model, RNG.standard_normal((3, 4, 1, 1)).astype(np.float32))
    assert count == 1 and _ops(model) == ["Conv", "Clip"]
    assert {t.name for t in model.graph.initializer}.isdisjoint({"w", "b"})  # the unfolded weights are dropped


def _gated_graph() -> onnx.ModelProto:
    return _model([helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1],
                                    kernel_shape=[3, 3]),
                   helper.make_node("GlobalAveragePool", ["c"], ["s"], name="squeeze"),
                   helper.make_node("Sigmoid", ["s"], ["g"], name="sigmoid"),
                   helper.make_node("Mul", ["c", "g"], ["y"], name="gate")],
                  [_weights("w", 4, 4, 3, 3), _weights("b", 4)], ["batch", 4, 6, 6])


def _quantize(tmp_path, name: str, passes) -> tuple[dict, onnx.ModelProto]:
    src, dst = tmp_path / "gated.onnx", tmp_path / f"{name}.int8.onnx"
    if not src.exists():  # one float file for every selection compared
        onnx.save(_gated_graph(), str(src))
    x = np.random.default_rng(1).standard_normal((8, 4, 6, 6)).astype(np.float32)
    return pr.quantize_int8(src, dst, x, keep_ends_float=False, passes=passes), onnx.load(str(dst))


def test_tile_gates_along_width_on_an_int8_gate_and_switching_it_off(tmp_path):
    settings, tiled = _quantize(tmp_path, "tiled", ["tile_gates_along_width"])
    off_settings, plain = _quantize(tmp_path, "plain", [])
    assert ip.rewrites_made(settings)["tile_gates_along_width"] == 1 and _ops(tiled).count("Tile") == 1
    assert not any(r["enabled"] for r in off_settings["passes"]) and "Tile" not in _ops(plain)
    # the pass adds the Tile and its repeats, nothing else: the same product
    assert sorted(set(_ops(tiled)) - set(_ops(plain))) == ["Tile"]
    assert len(tiled.graph.node) == len(plain.graph.node) + 1
    x = np.random.default_rng(2).standard_normal((3, 4, 6, 6)).astype(np.float32)
    assert np.array_equal(_run(tiled, x), _run(plain, x))


def test_the_report_and_metadata_record_the_declared_order(tmp_path):
    settings, model = _quantize(tmp_path, "all", None)
    assert [r["name"] for r in settings["passes"]] == list(ip.PASS_NAMES)
    meta = {p.key: p.value for p in model.metadata_props}[ip.METADATA_KEY]
    assert [item.split("=")[0] for item in meta.split(",")] == list(ip.PASS_NAMES)
    # the average pools take the depthwise form only on request (the pool-form choice)
    assert "average_pools_as_depthwise_convs=off" in meta and "tile_gates_along_width=1" in meta


def test_select_passes_reads_all_none_and_names_and_refuses_unknown_names():
    assert ip.select_passes("all") == frozenset(ip.PASS_NAMES) and ip.select_passes("none") == frozenset()
    assert ip.select_passes("private_relu_inputs, pad_depthwise_channels") == {"private_relu_inputs",
                                                                               "pad_depthwise_channels"}
    with pytest.raises(ip.Int8PassError, match="use all, none or a comma-separated list of average_pools"):
        ip.select_passes("private_relu_inputs,fold_everything")
    with pytest.raises(ip.Int8PassError):
        ip.enabled_passes(["nope"])


def test_an_unknown_pass_on_the_command_line_is_a_one_line_usage_error(tmp_path, capsys):
    from cdarts_deploy.commands.export import main

    code = main(["darts_v2", "--int8", "--calib-dir", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--int8-passes", "private_relu_inputs,fold_everything"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--int8-passes: unknown INT8 pass fold_everything" in err and all(n in err for n in ip.PASS_NAMES)
    code = main(["darts_v2", "--onnx", "--out", str(tmp_path / "o"), "--int8-passes", "none"])
    assert code == 2 and "add --int8" in capsys.readouterr().err
