"""The reduced-precision rules and the checks that must be able to fail: fp16 against PyTorch's own fp16
error, INT8 element-wise against ONNX Runtime CPU on the same quantized file, top-1 that proves nothing
against the reference's own rolled batch, ONNX Runtime's CUDA provider without TF32, and the INT8 pass that
must leave a mean over a 3-D tensor alone."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from onnx import helper, numpy_helper

from cdarts_deploy.deploy import ort, parity, rules
from cdarts_deploy.deploy import precision as pr
from cdarts_deploy.deploy.onnx_graph import export_onnx
from cdarts_deploy.deploy.parity import TorchReference, compare_runtime


@pytest.fixture(scope="module")
def loud_network(tiny_network, tmp_path_factory):
    """The tiny network with its classifier scaled so that the logits reach about 10, its FP32 file and a
    reference on a random batch of 2 and on 8 real images."""
    model, _, images = tiny_network
    model = copy.deepcopy(model)
    with torch.no_grad():
        scale = 10.0 / float(model(torch.from_numpy(images[:8])).abs().max())
        for p in model.classifier.parameters():
            p.mul_(scale)
    folder = tmp_path_factory.mktemp("loud")
    export_onnx(model, folder / "fp32.onnx", (2, 3, 32, 32), exporter="torchscript")
    rng = np.random.default_rng(5)
    inputs = {"random b2": rng.standard_normal((2, 3, 32, 32)).astype(np.float32), parity.IMAGES: images[:8]}
    return model, folder, images, TorchReference(model, inputs)


def test_fp16_rule_refuses_a_one_percent_error_at_logits_of_ten(loud_network):
    model, folder, _, reference = loud_network
    pr.to_fp16(folder / "fp32.onnx", folder / "fp16.onnx")
    session = ort.session(folder / "fp16.onnx")
    right = compare_runtime(reference, lambda x: ort.run(session, x), ["logits"], "fp16")
    assert all(r["passed"] and r["input_dependent"] for r in right), parity.failures(right)
    assert max(float(np.abs(o).max()) for o in reference.outputs(parity.IMAGES)) > 9
    off = compare_runtime(reference, lambda x: [o * 1.01 for o in ort.run(session, x)], ["logits"], "fp16")
    assert not any(r["passed"] for r in off) and "max abs" in parity.failures(off)[0]
    # the old tolerance, 5e-2 + 5e-2 x max|logit|, let that 1% error pass
    for row, label in zip(off, reference.inputs):
        assert row["max_abs"] < 5e-2 + 5e-2 * float(np.abs(reference.outputs(label)[0]).max())
    # a right scale but a rotated class order keeps every magnitude; top-1 and cosine refuse it
    rotated = compare_runtime(reference, lambda x: [np.roll(o, 1, axis=1) for o in ort.run(session, x)],
                              ["logits"], "fp16")
    assert not any(r["passed"] for r in rotated)


@pytest.fixture(scope="module")
def qdq_file(loud_network):
    """The loud network as a TensorRT-target (explicit Q/DQ) INT8 file and ONNX Runtime CPU sessions on it."""
    _, folder, images, _ = loud_network
    pr.quantize_int8(folder / "fp32.onnx", folder / "qdq.onnx", images[:16], target="tensorrt")
    return folder / "qdq.onnx"


def test_int8_is_judged_element_wise_against_onnxruntime_cpu_on_the_same_file(loud_network, qdq_file):
    _, _, _, reference = loud_network
    steps = rules.output_steps(qdq_file)
    cpu = ort.session(qdq_file)
    names = ort.output_names(cpu)
    assert list(steps) == names and steps[names[0]] > 0
    plain = ort.session(qdq_file, optimize=False)  # other kernels, the same file: a right candidate
    same_file = lambda x: ort.run(cpu, x)  # noqa: E731
    right = compare_runtime(reference, lambda x: ort.run(plain, x), names, "int8", "tensorrt",
                            int8_reference=same_file, int8_steps=steps)
    element_wise = [r for r in right if r["against"] == "onnxruntime-cpu same file"]
    # every input judged element-wise, random ones included (random calibration leaves no row unjudged)
    assert [r["input"] for r in element_wise] == ["random b2", parity.IMAGES]
    assert all(r["passed"] for r in right if r["passed"] is not None), parity.failures(right)
    wrong = {
        "rotated logits": lambda x: [np.roll(o, 1, axis=1) for o in ort.run(plain, x)],
        "another input": lambda x: ort.run(plain, parity.other_input(x)),
        "scaled by 2 (a wrong output scale)": lambda x: [o * 2 for o in ort.run(plain, x)],
    }
    for what, run in wrong.items():
        rows = compare_runtime(reference, run, names, "int8", "tensorrt", int8_reference=same_file,
                               int8_steps=steps)
        element_wise = [r for r in rows if r["against"] == "onnxruntime-cpu same file"]
        assert element_wise and not any(r["passed"] for r in element_wise), what
        assert "output steps" in parity.failures(rows)[0], what
    # an output without a quantization step cannot be judged: refused, not passed
    rows = compare_runtime(reference, same_file, names, "int8", "tensorrt", int8_reference=same_file,
                           int8_steps={})
    assert not any(r["passed"] for r in rows if r["against"] == "onnxruntime-cpu same file")


def test_output_steps_follow_the_dequantized_classifier(tmp_path):
    """A float Gemm on a dequantized input: the input step times the largest weight-row norm."""
    w = np.asarray([[3.0, 4.0], [1.0, 0.0]], np.float32)  # row norms 5 and 1
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
             helper.make_node("Gemm", ["dq", "w"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [1, 2])],
                              [helper.make_tensor_value_info("y", 1, [1, 2])],
                              [numpy_helper.from_array(np.float32(0.5), "s"),
                               numpy_helper.from_array(np.uint8(0), "z"), numpy_helper.from_array(w, "w")])
    import onnx

    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "g.onnx")
    assert rules.output_steps(tmp_path / "g.onnx") == {"y": 2.5}


def test_top1_that_its_own_rolled_batch_passes_proves_nothing(loud_network):
    model, _, images, _ = loud_network
    same = lambda x: parity.torch_outputs(model, x)  # noqa: E731
    real = TorchReference(model, {parity.IMAGES: images[:8]})
    rows = compare_runtime(real, same, ["logits"], "int8")
    assert rows[0]["reference_rolled_top1"] <= rules.MAX_ROLLED_TOP1 and rows[0]["passed"]

    # a network that calls every image the same class: its top-1 agrees with its own rolled batch
    flat = copy.deepcopy(model)
    with torch.no_grad():
        flat.classifier.bias.copy_(torch.arange(10, dtype=torch.float32) * 100)
    flat_ref = TorchReference(flat, {parity.IMAGES: images[:8]})
    rows = compare_runtime(flat_ref, lambda x: parity.torch_outputs(flat, x), ["logits"], "int8")
    assert rows[0]["reference_rolled_top1"] == 1.0 and rows[0]["passed"] is False
    assert "proves nothing" in parity.failures(rows)[0]


def test_int8_judged_on_no_input_fails(loud_network):
    model, _, _, _ = loud_network
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    rows = compare_runtime(TorchReference(model, {"random b2": x}), lambda b: parity.torch_outputs(model, b),
                           ["logits"], "int8")
    assert rows[-1]["passed"] is False and "judged on no input" in parity.failures(rows)[0]


def test_onnxruntime_cuda_sessions_ask_for_tf32_off():
    (cuda, options), cpu = ort.providers("cuda")
    assert cuda == "CUDAExecutionProvider" and options == {"use_tf32": "0"} and cpu == "CPUExecutionProvider"
    assert ort.providers("cuda", tf32=True)[0][1] == {"use_tf32": "1"}
    assert ort.providers("cpu") == ["CPUExecutionProvider"]


def test_spatial_mean_pass_leaves_a_mean_over_a_3d_or_5d_tensor_alone():
    from cdarts_deploy.deploy import int8_passes as ip

    def run(shape, axes):
        model = helper.make_model(helper.make_graph(
            [helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=1)], "g",
            [helper.make_tensor_value_info("x", 1, shape)], [helper.make_tensor_value_info("y", 1, None)],
            [numpy_helper.from_array(np.asarray(axes, np.int64), "axes")]),
            opset_imports=[helper.make_opsetid("", 18)])
        import onnx

        model = onnx.shape_inference.infer_shapes(model)
        count = next(p for p in ip.PASSES if p.name == "spatial_means_to_global_pools").run(model, ip.PassState())
        return count, [n.op_type for n in model.graph.node]

    assert run([2, 4, 5], [-2, -1]) == (0, ["ReduceMean"])
    assert run([2, 4, 3, 5, 6], [2, 3]) == (0, ["ReduceMean"])
    assert run([2, 4, 3, 5, 6], [-2, -1]) == (0, ["ReduceMean"])
    assert run([2, 4, 3, 5], [-2, -1]) == (1, ["GlobalAveragePool"])
