"""Per-layer comparison: a correct file agrees layer by layer; an error injected into one layer is found there."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from cdarts_deploy.deploy import layer_compare as lc
from tiny_deploy import HW


@pytest.fixture(scope="module")
def golden(tiny_network):
    model, path, images = tiny_network
    return lc.record_golden(model, images[:2])


def test_every_layer_of_a_correct_file_agrees(golden, tiny_network, tmp_path):
    _, path, _ = tiny_network
    report = lc.compare_layers(golden, path)
    assert report.first_divergence is None
    assert len(report.rows) > 50  # cells, their ops, convs, ReLUs: not just the logits
    assert any("folded" in r["layer"] for r in report.rows)  # conv rows judged after their folded BatchNorm
    assert all(r["passed"] for r in report.rows)
    # the golden file round-trips and gives the same verdict against the same ONNX file
    golden.save(tmp_path / "g.npz")
    again = lc.Golden.load(tmp_path / "g.npz")
    assert again.order == golden.order and np.array_equal(again.input, golden.input)
    assert lc.compare_layers(again, path).first_divergence is None



def test_a_scaled_conv_weight_is_named_as_the_first_divergence(golden, tiny_network, tmp_path):
    _, path, _ = tiny_network
    proto = onnx.load(str(path))
    modules = set(golden.order)
    victim = next(n for n in proto.graph.node if n.op_type == "Conv" and "/cells.2/ops." in n.name)
    module = lc.node_module(victim, modules)
    assert module and module.startswith("cells.2.ops.")
    inits = {t.name: t for t in proto.graph.initializer}
    weight = inits[victim.input[1]]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, str(broken))
    report = lc.compare_layers(golden, broken)
    first = report.first_divergence
    assert first is not None and first["layer"].split(" ")[0] == module
    assert first["onnx_tensor"] == victim.output[0]
    # every layer before it in execution order still agrees
    before = report.rows[: report.rows.index(first)]
    assert before and all(r["passed"] for r in before)
    assert module in lc.summary(report) and "first divergence" in lc.format_table(report)


def test_a_golden_file_of_another_network_or_a_broken_file_is_refused(tiny_network, tmp_path):
    import torch

    _, path, _ = tiny_network
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).eval()
    foreign = lc.record_golden(other, np.zeros((1, 3, *HW), np.float32))
    foreign.order, foreign.kinds = ["head.x"], {"head.x": "Conv2d"}
    with pytest.raises(lc.GoldenError, match="same network"):
        lc.compare_layers(foreign, path)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(lc.GoldenError, match="cannot read golden file"):
        lc.Golden.load(tmp_path / "bad.npz")
