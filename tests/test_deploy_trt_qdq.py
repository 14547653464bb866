"""The TensorRT INT8 file: Q/DQ on the inputs of every op TensorRT runs in 8 bits, per-channel weights,
BatchNorm folded first; and the coverage check that finds a file quantized the old way (convolutions only)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from cdarts_deploy.deploy import trt_qdq

POOLS = ("MaxPool", "AveragePool", "GlobalAveragePool")


@pytest.fixture(scope="module")
def qdq(tiny_network, tmp_path_factory):
    _, path, images = tiny_network
    dst = tmp_path_factory.mktemp("qdq") / "tiny.int8.qdq.onnx"
    settings = trt_qdq.quantize_for_tensorrt(path, dst, images[:16])
    return settings, onnx.load(str(dst))


def test_every_int8_op_input_has_a_dequantize_producer(qdq, tiny_network):
    settings, model = qdq
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    ops = {node.op_type for node in graph.node}
    assert {"Conv", "Add", "Concat", "MaxPool", "GlobalAveragePool"} <= ops  # the tiny network has them all
    checked = 0
    for node in graph.node:
        if node.op_type in ("Conv", "Add", "Concat", *POOLS):
            inputs = node.input[:2] if node.op_type == "Conv" else node.input
            for name in inputs:
                assert producer[name].op_type == "DequantizeLinear", (node.name, node.op_type, name)
                checked += 1
    assert checked > 150
    assert settings["unquantized_inputs"] == [] and settings["per_tensor_weights"] == []
    assert not any(n.op_type == "BatchNormalization" and producer.get(n.input[0], n).op_type == "Conv"
                   for n in graph.node)


def test_batchnorm_after_a_convolution_is_folded_before_quantizing(tmp_path):
    """A Conv -> BatchNormalization pair becomes one convolution whose per-channel scales fit the folded weights."""
    rng = np.random.default_rng(0)
    c = 8
    arrays = {"w": rng.normal(size=(c, 3, 3, 3)).astype(np.float32), "gamma": rng.uniform(0.5, 4, c).astype(np.float32),
              "beta": rng.normal(size=c).astype(np.float32), "mean": rng.normal(size=c).astype(np.float32),
              "var": rng.uniform(0.5, 2, c).astype(np.float32)}
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Conv", ["input", "w"], ["conv"], pads=[1, 1, 1, 1]),
         onnx.helper.make_node("BatchNormalization", ["conv", "gamma", "beta", "mean", "var"], ["output"])],
        "conv_bn", [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [None, 3, 8, 8])],
        [onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [None, c, 8, 8])],
        [numpy_helper.from_array(v, k) for k, v in arrays.items()])
    src, dst = tmp_path / "conv_bn.onnx", tmp_path / "q.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(src))
    trt_qdq.quantize_for_tensorrt(src, dst, rng.normal(size=(8, 3, 8, 8)).astype(np.float32))
    model = onnx.load(str(dst))
    assert [n.op_type for n in model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")] == ["Conv"]
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    dq = next(n for n in model.graph.node if n.output[0] == conv.input[1])
    folded = arrays["w"] * (arrays["gamma"] / np.sqrt(arrays["var"] + 1e-5))[:, None, None, None]
    scale = inits[dq.input[1]]
    assert np.allclose(scale, np.abs(folded).reshape(c, -1).max(1) / 127, rtol=1e-3)  # scales of folded weights


def test_conv_weights_are_per_output_channel_and_activations_symmetric(qdq):
    _, model = qdq
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    for conv in convs:
        dq = producer[conv.input[1]]
        weight, scale = inits[dq.input[0]], inits[dq.input[1]]
        axis = next(a.i for a in dq.attribute if a.name == "axis")
        assert weight.dtype == np.int8 and axis == 0 and scale.shape == (weight.shape[0],), conv.name
        if len(conv.input) > 2:  # biases stay float
            assert conv.input[2] in inits and inits[conv.input[2]].dtype == np.float32
    for node in graph.node:  # TensorRT takes symmetric signed INT8 only
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = inits[node.input[2]]
            assert zp.dtype == np.int8 and not zp.any()


def test_coverage_finds_a_convolutions_only_per_tensor_file(tiny_network, tmp_path):
    """The placement TensorRT's guide warns against: Q/DQ on Conv/Gemm only, per-tensor weights."""
    _, path, images = tiny_network
    old = tmp_path / "convs_only.onnx"
    quantize_static(str(path), str(old), trt_qdq._Batches(images[:8], "input"), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=False,
                    op_types_to_quantize=["Conv", "Gemm", "MatMul"],
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    coverage = trt_qdq.qdq_coverage(onnx.load(str(old)))
    missing = coverage["unquantized_inputs"]
    assert any("(Add)" in m for m in missing) and any("(Concat)" in m for m in missing)
    assert any("(MaxPool)" in m or "(GlobalAveragePool)" in m for m in missing)
    assert len(coverage["per_tensor_weights"]) > 100


def test_unknown_calibration_method_is_refused(tiny_network, tmp_path):
    with pytest.raises(ValueError, match="calibration method"):
        trt_qdq.quantize_for_tensorrt(tiny_network[1], tmp_path / "x.onnx", tiny_network[2][:2], method="bogus")
    assert list(tmp_path.iterdir()) == []
