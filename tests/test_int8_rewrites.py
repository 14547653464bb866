"""Float-graph rewrites before INT8 quantization: each keeps the float results and removes an 8-bit obstacle."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from backbones.darts_ops import FactorizedReduce
from cdarts_deploy.deploy import int8_passes as rw


@pytest.fixture(scope="module")
def tiny(tiny_network):
    return tiny_network


def _float_outputs(proto, x):
    import onnxruntime

    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_graph_rewrites_do_not_change_the_float_results(tiny, tmp_path):
    from onnxruntime.quantization.shape_inference import quant_pre_process

    _, path, images = tiny
    prepared = tmp_path / "prepared.onnx"
    quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
    proto = onnx.load(str(prepared))
    before = _float_outputs(proto, images[:4])
    assert rw.shared_input_relus(proto)  # the DARTS cell has Relus on shared tensors
    assert rw.factorized_reductions_as_single_convs(proto) > 0
    copies = rw.private_relu_inputs(proto)
    assert copies > 0 and rw.shared_input_relus(proto) == []
    padded = rw.pad_depthwise_channels(proto)
    assert padded > 0
    # a shared tensor gets its extra channels from a widening 1x1 convolution, never from a channel Pad
    assert not [n for n in proto.graph.node if n.op_type == "Pad"]
    assert [n for n in proto.graph.node if n.op_type == "Conv" and n.name.endswith("__widen")]
    inits = {t.name: t for t in proto.graph.initializer}
    for name in rw.depthwise_convs(proto):
        node = next(n for n in proto.graph.node if n.name == name)
        assert onnx.numpy_helper.to_array(inits[node.input[1]]).shape[0] % rw.DEPTHWISE_CHANNEL_ALIGN == 0
    onnx.checker.check_model(proto)
    after = _float_outputs(proto, images[:4])
    assert np.allclose(before, after, rtol=1e-4, atol=1e-5)
    # a second pass finds nothing left to do
    assert rw.private_relu_inputs(proto) == 0 and rw.pad_depthwise_channels(proto) == 0
    assert rw.factorized_reductions_as_single_convs(proto) == 0


def test_two_relus_of_one_tensor_become_one_with_a_private_input():
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r1"]), helper.make_node("Relu", ["x"], ["r2"]),
         helper.make_node("Add", ["r1", "r2"], ["s"]), helper.make_node("Add", ["s", "x"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = np.random.default_rng(1).standard_normal((1, 2, 3, 3)).astype(np.float32)
    before = _float_outputs(proto, x)
    assert rw.private_relu_inputs(proto) == 1
    relus = [n for n in proto.graph.node if n.op_type == "Relu"]
    assert len(relus) == 1 and rw.shared_input_relus(proto) == []
    assert np.allclose(_float_outputs(proto, x), before)


def test_spatial_mean_becomes_a_global_pool_with_the_same_result():
    from onnx import TensorProto, helper

    axes = onnx.numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1),
         helper.make_node("ReduceMean", ["x", "axes"], ["flat"], keepdims=0)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 5])],
        [helper.make_tensor_value_info("m", TensorProto.FLOAT, [2, 3, 1, 1]),
         helper.make_tensor_value_info("flat", TensorProto.FLOAT, [2, 3])], [axes])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    before = _float_outputs(proto, x)
    assert rw.spatial_means_to_global_pools(proto) == 1  # keepdims=0 is left alone
    assert [n.op_type for n in proto.graph.node] == ["GlobalAveragePool", "ReduceMean"]
    assert np.allclose(_float_outputs(proto, x), before, atol=1e-6)


def _prepared(module: torch.nn.Module, size: int, tmp_path, name: str) -> onnx.ModelProto:
    """``module`` exported (BatchNorm with non-trivial statistics) and optimised as the quantizer sees it."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    module.eval()
    exported, prepared = tmp_path / f"{name}.onnx", tmp_path / f"{name}.prepared.onnx"
    torch.onnx.export(module, torch.randn(2, 6, size, size), str(exported), dynamo=False, input_names=["x"])
    quant_pre_process(str(exported), str(prepared), skip_symbolic_shape=True)
    return onnx.load(str(prepared))


def _factorized_reduce() -> torch.nn.Module:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(6, 6, 3, padding=1), FactorizedReduce(6, 8))
    bn = module[1].bn
    bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
    bn.bias.data.uniform_(-1, 1)
    return module


@pytest.mark.parametrize("size", [8, 9])
def test_factorized_reduction_becomes_one_convolution_with_the_same_result(size, tmp_path):
    proto = _prepared(_factorized_reduce(), size, tmp_path, f"fr{size}")
    x = np.random.default_rng(size).standard_normal((2, 6, size, size)).astype(np.float32)
    before = _float_outputs(proto, x)
    assert rw.factorized_reductions_as_single_convs(proto) == 1
    ops = [n.op_type for n in proto.graph.node]
    assert not {"Slice", "Pad", "Concat", "BatchNormalization"} & set(ops), ops
    assert ops.count("Conv") == 2
    onnx.checker.check_model(proto)
    after = _float_outputs(proto, x)
    assert after.shape == before.shape == (2, 8, (size + 1) // 2, (size + 1) // 2)
    assert np.allclose(after, before, rtol=1e-4, atol=1e-5)


def test_a_shift_other_than_one_pixel_is_not_taken_for_a_factorized_reduction(tmp_path):
    class ShiftedTwo(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Conv2d(6, 4, 1, stride=2, bias=False)
            self.b = torch.nn.Conv2d(6, 4, 1, stride=2, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(x)
            shifted = torch.nn.functional.pad(x[:, :, 2:, 2:], (0, 1, 0, 1))  # same pad, two-pixel shift
            return torch.cat([self.a(x), self.b(shifted)], dim=1)

    proto = _prepared(ShiftedTwo(), 8, tmp_path, "shift2")
    assert rw.factorized_reductions_as_single_convs(proto) == 0
    assert {"Slice", "Pad", "Concat"} <= {n.op_type for n in proto.graph.node}


def _pool_graph(kernel: int, stride: int, pad: int, size: int, count_include_pad: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(kernel * 10 + stride)
    inits = [onnx.numpy_helper.from_array(rng.standard_normal((6, 6, 1, 1)).astype(np.float32), "w"),
             onnx.numpy_helper.from_array(np.zeros(6, np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("AveragePool", ["r"], ["y"], kernel_shape=[kernel, kernel], strides=[stride, stride],
                              pads=[pad] * 4, count_include_pad=count_include_pad)]
    graph = helper.make_graph(nodes, "pool",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


@pytest.mark.parametrize("kernel,stride,size,include", [(3, 1, 8, 0), (3, 2, 8, 0), (3, 2, 9, 0), (3, 1, 7, 1)])
def test_average_pool_becomes_a_depthwise_convolution_with_the_same_result(kernel, stride, size, include):
    proto = _pool_graph(kernel, stride, 1, size, include)
    x = np.random.default_rng(size).standard_normal((2, 6, size, size)).astype(np.float32)
    before = _float_outputs(proto, x)
    corrections = rw.average_pools_as_depthwise_convs(proto)
    ops = [n.op_type for n in proto.graph.node]
    assert "AveragePool" not in ops and ops.count("Conv") == 2
    assert len(corrections) == (0 if include else 1) and ops.count("Mul") == len(corrections)
    for name, scale in corrections.items():  # the border factors are whole multiples of the 8-bit step
        factors = onnx.numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == name))
        assert set(np.unique(factors)) <= {1.0, 1.5, 2.25}
        assert np.array_equal(factors / scale, np.round(factors / scale))
    onnx.checker.check_model(proto)
    assert np.allclose(_float_outputs(proto, x), before, rtol=1e-5, atol=1e-6)


def test_a_pool_whose_border_factors_do_not_fit_eight_bits_stays_a_pool():
    # 5x5 with 2 pixels of padding: factors 25/9 ... 25/16 have no common 8-bit step
    assert rw.exact_uint8_scale(np.array([1.0, 1.5, 2.25])) == 0.25
    assert rw.exact_uint8_scale(np.array([25 / 9, 25 / 16, 1.0])) is None
    proto = _pool_graph(5, 1, 2, 8)
    assert rw.average_pools_as_depthwise_convs(proto) == {}
    assert "AveragePool" in [n.op_type for n in proto.graph.node]


def test_int8_pool_runs_as_depthwise_convolution_with_exact_border_factors(tmp_path):
    from cdarts_deploy.deploy import precision as pr

    src, dst = tmp_path / "pool.onnx", tmp_path / "pool.int8.onnx"
    onnx.save(_pool_graph(3, 1, 1, 8), str(src))
    x = np.abs(np.random.default_rng(3).standard_normal((16, 6, 8, 8))).astype(np.float32)
    kept = tmp_path / "pool.kept.int8.onnx"
    kept_settings = pr.quantize_int8(src, kept, x[:8], keep_ends_float=False)
    assert rw.rewrites_made(kept_settings)["average_pools_as_depthwise_convs"] == 0
    settings = pr.quantize_int8(src, dst, x[:8], keep_ends_float=False, pools_as_convs=True)
    assert rw.rewrites_made(settings)["average_pools_as_depthwise_convs"] == 1
    proto = onnx.load(str(dst))
    ops = [n.op_type for n in proto.graph.node]
    assert "AveragePool" not in ops and "QLinearMul" in ops
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    factor = next(k for k in inits if k.endswith("_count_correction_quantized"))
    scale = inits[factor.replace("_quantized", "_scale")]
    assert np.array_equal(np.unique(inits[factor] * scale), np.array([1.0, 1.5, 2.25], np.float32))
    # on the calibration images themselves only rounding is left: a few 8-bit steps at most
    out = _float_outputs(proto, x[:8])
    ref = _float_outputs(_pool_graph(3, 1, 1, 8), x[:8])
    assert np.abs(out - ref).max() < 0.03 * np.abs(ref).max()


@pytest.mark.parametrize("faster", ["average_pools", "depthwise_convs"])
def test_the_pool_form_that_times_faster_is_kept(tmp_path, faster):
    """Both INT8 files are made and timed; the one the timer finds faster is the one written."""
    from cdarts_deploy.deploy import precision as pr

    src, dst = tmp_path / "pool.onnx", tmp_path / "pool.int8.onnx"
    onnx.save(_pool_graph(3, 1, 1, 8), str(src))
    x = np.abs(np.random.default_rng(3).standard_normal((8, 6, 8, 8))).astype(np.float32)
    timed = []

    def timer(paths, batch):
        ops = {form: [n.op_type for n in onnx.load(str(p)).graph.node] for form, p in paths.items()}
        assert "AveragePool" in ops["average_pools"] and "AveragePool" not in ops["depthwise_convs"]
        timed.append(len(batch))
        return {form: (1.0 if form == faster else 2.0) for form in paths}

    settings = pr.quantize_int8_fastest_pools(src, dst, x, x[:4], timer=timer, keep_ends_float=False)
    assert timed == [4] and settings["pool_form"] == {"chosen": faster, "batch": 4, "average_pools_ms": 1.0 if
                                                      faster == "average_pools" else 2.0,
                                                      "depthwise_convs_ms": 1.0 if faster == "depthwise_convs" else 2.0}
    ops = [n.op_type for n in onnx.load(str(dst)).graph.node]
    assert ("AveragePool" in ops) == (faster == "average_pools")
    made = rw.rewrites_made(settings)["average_pools_as_depthwise_convs"]
    assert made == (1 if faster == "depthwise_convs" else 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.int8.onnx", "pool.onnx"]  # nothing else left


def test_a_graph_without_pools_is_quantized_once_and_never_timed(tmp_path):
    from cdarts_deploy.deploy import precision as pr

    proto = _pool_graph(3, 1, 1, 8)
    del proto.graph.node[2]
    proto.graph.output[0].name = "r"
    src, dst = tmp_path / "conv.onnx", tmp_path / "conv.int8.onnx"
    onnx.save(proto, str(src))
    x = np.abs(np.random.default_rng(3).standard_normal((8, 6, 8, 8))).astype(np.float32)

    def timer(paths, batch):
        raise AssertionError("nothing to choose between")

    settings = pr.quantize_int8_fastest_pools(src, dst, x, x[:1], timer=timer, keep_ends_float=False)
    assert "pool_form" not in settings and dst.exists()


def _gated_block(width: int = 16) -> torch.nn.Module:
    """Conv -> squeeze-excitation with a hard-sigmoid gate (the chain networks' block tail) -> Conv."""
    from timm.layers import SqueezeExcite

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(6, width, 3, padding=1), torch.nn.ReLU(),
                               SqueezeExcite(width, rd_ratio=0.25, gate_layer="hard_sigmoid"),
                               torch.nn.Conv2d(width, 8, 1)).eval()


def test_hard_sigmoid_is_folded_into_its_convolution_with_the_same_result(tmp_path):
    proto = _prepared(_gated_block(), 9, tmp_path, "gated")
    x = np.random.default_rng(0).standard_normal((2, 6, 9, 9)).astype(np.float32)
    before = _float_outputs(proto, x)
    assert rw.hard_sigmoids_into_convs(proto) == 1
    ops = [n.op_type for n in proto.graph.node]
    assert "HardSigmoid" not in ops and ops.count("Clip") == 1
    assert rw.shared_input_relus(proto) == []  # the Clip is its input's only reader, so it may be folded
    assert np.allclose(_float_outputs(proto, x), before, rtol=1e-5, atol=1e-6)
    assert rw.hard_sigmoids_into_convs(proto) == 0


def test_a_hard_sigmoid_of_a_shared_convolution_output_is_left_alone():
    weight = onnx.numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("HardSigmoid", ["c"], ["g"]),
         helper.make_node("Add", ["g", "c"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])], [weight])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert rw.hard_sigmoids_into_convs(proto) == 0
    # and a Clip on a shared tensor is one the quantizer must not fold
    proto.graph.node[1].CopyFrom(helper.make_node("Clip", ["c"], ["g"], name="clip"))
    assert rw.shared_input_relus(proto) == ["clip"]


def test_only_a_per_channel_multiply_is_taken_for_a_gate():
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "s"], ["a"], name="gate"),
         helper.make_node("Mul", ["a", "x"], ["b"], name="full"),
         helper.make_node("Mul", ["t", "b"], ["y"], name="spatial")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 7]),
              helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 4, 1, 1]),
              helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 1, 5, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 7])])
    proto = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    assert rw.broadcast_gates(proto) == {"gate": (1, 7)}


def test_int8_gate_is_eight_bit_end_to_end_and_tiling_it_changes_no_output(tmp_path):
    from cdarts_deploy.deploy import precision as pr

    src, dst = tmp_path / "gated.onnx", tmp_path / "gated.int8.onnx"
    block = _gated_block()
    torch.onnx.export(block, torch.randn(2, 6, 9, 9), str(src), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    x = np.random.default_rng(4).standard_normal((16, 6, 9, 9)).astype(np.float32)
    settings = pr.quantize_int8(src, dst, x[:8], keep_ends_float=False)
    made = rw.rewrites_made(settings)
    assert made["hard_sigmoids_into_convs"] == 1 and made["tile_gates_along_width"] == 1
    proto = onnx.load(str(dst))
    ops = [n.op_type for n in proto.graph.node]
    # only the graph's own input and output cross between float and 8 bits: no float island at the gate
    assert "HardSigmoid" not in ops and ops.count("QuantizeLinear") == 1 and ops.count("DequantizeLinear") == 1
    tile = next(n for n in proto.graph.node if n.op_type == "Tile")
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert list(inits[tile.input[1]]) == [1, 1, 1, 9]
    # the same file with the gate read untiled gives bit-identical outputs, at batch 1 and 5
    untiled = onnx.load(str(dst))
    for node in untiled.graph.node:
        node.input[:] = [tile.input[0] if name == tile.output[0] else name for name in node.input]
    for batch in (1, 5):
        assert np.array_equal(_float_outputs(proto, x[8:8 + batch]), _float_outputs(untiled, x[8:8 + batch]))
    with torch.no_grad():
        ref = block(torch.from_numpy(x[:8])).numpy()
    assert np.abs(_float_outputs(proto, x[:8]) - ref).max() < 0.05 * np.abs(ref).max()
    # without the gate rewrites the quantizer leaves the HardSigmoid float, between a dequantize and a quantize
    plain = tmp_path / "gated.plain.int8.onnx"
    made = rw.rewrites_made(pr.quantize_int8(src, plain, x[:8], keep_ends_float=False, gates=False))
    assert made["hard_sigmoids_into_convs"] == made["tile_gates_along_width"] == 0
    ops = [n.op_type for n in onnx.load(str(plain)).graph.node]
    assert "HardSigmoid" in ops and "Tile" not in ops and ops.count("QuantizeLinear") == 2
