"""``cdarts-export --debug-layers`` and ``cdarts-compare``: golden outputs saved once, later files judged layer by
layer."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
from onnx import numpy_helper

from cdarts_deploy.commands.compare import main as compare_main
from cdarts_deploy.commands.export import main as export_main
from cdarts_deploy.deploy import layer_compare as lc

SMALL = ["--width", "8", "--cells", "5", "--input-size", "32", "--latency-iters", "0", "--exporter", "torchscript"]


def test_debug_layers_then_compare_finds_the_broken_layer(tmp_path, capsys):
    out = tmp_path / "out"
    assert export_main(["cdarts_cifar", "--debug-layers", *SMALL, "--name", "net", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "all" in err and "layers agree with PyTorch" in err
    report = json.loads((out / "net.json").read_text())
    assert report["layers"]["first_divergence"] is None and report["layers"]["golden"] == "net.golden.npz"
    assert {"build", "bn_calibration", "export", "check", "parity", "diagnose"} <= set(report["seconds"])

    # the same file passes again against the saved golden outputs
    assert compare_main([str(out / "net.onnx"), str(out / "net.golden.npz")]) == 0
    assert "layers agree" in capsys.readouterr().out

    # a later file with one convolution's weights scaled: that convolution's layer is named
    proto = onnx.load(str(out / "net.onnx"))
    victim = next(n for n in proto.graph.node if n.op_type == "Conv" and "/cells.3/" in n.name)
    weight = next(t for t in proto.graph.initializer if t.name == victim.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 0.5, weight.name))
    onnx.save(proto, str(tmp_path / "later.onnx"))
    golden = lc.Golden.load(out / "net.golden.npz")
    module = lc.node_module(victim, set(golden.order))
    code = compare_main([str(tmp_path / "later.onnx"), str(out / "net.golden.npz"), "--json", str(tmp_path / "l.json")])
    printed = capsys.readouterr().out
    assert code == 1
    assert f"first divergent layer: {module}" in printed
    rows = json.loads((tmp_path / "l.json").read_text())
    assert rows["first_divergence"]["onnx_tensor"] == victim.output[0]


def test_compare_bad_input_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "g.npz").write_bytes(b"junk")
    (tmp_path / "m.onnx").write_bytes(b"junk")
    assert compare_main([str(tmp_path / "nope.onnx"), str(tmp_path / "g.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert compare_main([str(tmp_path / "m.onnx"), str(tmp_path / "g.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot read golden file" in err and len(err.splitlines()) == 1
    assert not Path(tmp_path / "l.json").exists()
