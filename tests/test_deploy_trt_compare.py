"""Runner against runner through Polygraphy's Comparator, judged by the parity rule: real ONNX Runtime runners on
the CPU (TensorRT runners use the same machinery on a GPU).  A deliberately broken ONNX file must fail, and the
all-tensors comparison must name the tensor where it starts to go wrong."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from cdarts_deploy.deploy import trt_compare as tc
from cdarts_deploy.deploy.model_spec import random_batch


@pytest.fixture(scope="module")
def broken(tiny_network, tmp_path_factory):
    """The tiny network with the weights of one convolution in the middle tripled, and that convolution's output."""
    path = tiny_network[1]
    model = onnx.load(str(path))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    target = convs[len(convs) // 2]
    weight = next(t for t in model.graph.initializer if t.name == target.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 3.0, weight.name))
    out = tmp_path_factory.mktemp("broken") / "broken.onnx"
    onnx.save(model, str(out))
    return out, target.output[0]


@pytest.fixture(scope="module")
def feeds(tiny_network):
    return {"random b2": random_batch(2, (32, 32), seed=3), "images": tiny_network[2][:4]}


def test_the_same_file_passes(tiny_network, feeds):
    path = tiny_network[1]
    result = tc.compare_runners(tc.onnxrt_runner(path, "reference"), tc.onnxrt_runner(path, "candidate"), feeds)
    assert result.passed and len(result.rows) == 2 and result.first_divergence is None
    assert {r["input"] for r in result.rows} == set(feeds) and all(r["max_abs"] < 1e-5 for r in result.rows)
    assert result.rows[0]["runtime"] == "candidate" and {"cosine", "shape", "name"} <= set(result.rows[0])


def test_a_broken_file_is_refused(tiny_network, broken, feeds):
    result = tc.compare_runners(tc.onnxrt_runner(tiny_network[1], "reference"),
                                tc.onnxrt_runner(broken[0], "broken"), feeds, runtime="onnxruntime broken")
    assert not result.passed and not any(r["passed"] for r in result.rows)
    assert result.first_divergence["runtime"] == "onnxruntime broken"


def test_a_missing_output_is_refused(tiny_network, feeds):
    path = tiny_network[1]
    result = tc.compare_runners(tc.onnxrt_runner(path, "reference"), tc.onnxrt_runner(path, "candidate"), feeds,
                                tensors=["output0", "no_such_tensor"])
    assert not result.passed and any(r.get("missing") for r in result.rows)


def test_all_tensors_name_the_first_divergent_one(tiny_network, broken):
    path, target = tiny_network[1], broken[1]
    x = random_batch(2, (32, 32), seed=4)
    same = tc.compare_all_tensors(path, tc.onnxrt_runner(path, "same", mark_all=True), x)
    assert same.passed and len(same.rows) > 100
    result = tc.compare_all_tensors(path, tc.onnxrt_runner(broken[0], "broken", mark_all=True), x)
    assert not result.passed and result.first_divergence["name"] == target
    order = [r["name"] for r in result.rows]
    assert all(r["passed"] for r in result.rows[: order.index(target)])  # everything before it agrees


def test_reduced_precision_uses_its_own_tolerance(tiny_network, feeds, tmp_path):
    from cdarts_deploy.deploy import precision as pr

    half = tmp_path / "half.onnx"
    pr.to_fp16(tiny_network[1], half)
    reference, candidate = tc.onnxrt_runner(tiny_network[1], "fp32"), tc.onnxrt_runner(half, "fp16")
    assert tc.compare_runners(reference, candidate, feeds, "fp16").passed
    assert np.isfinite([r["max_abs"] for r in tc.compare_runners(reference, candidate, feeds, "fp16").rows]).all()
