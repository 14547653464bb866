"""TensorRT entry points: one clear line and exit 2 where there is no NVIDIA GPU or no tensorrt package.

Building and checking a real engine needs an NVIDIA GPU: ``tools/gpu_check.py`` does that on such a machine.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

import pytest
import torch

from cdarts_deploy import profile_cli
from cdarts_deploy import trt

HAS_TRT = torch.cuda.is_available() and importlib.util.find_spec("tensorrt") is not None


def expected_reason() -> str:
    return "NVIDIA GPU" if not torch.cuda.is_available() else "'tensorrt' Python package"


@pytest.mark.skipif(HAS_TRT, reason="this machine can run TensorRT; tools/gpu_check.py checks engines there")
def test_require_tensorrt_names_what_is_missing_and_the_fix():
    with pytest.raises(trt.TensorRTUnavailable) as info:
        trt.require_tensorrt()
    message = str(info.value)
    assert expected_reason() in message
    assert "\n" not in message
    assert "ONNX Runtime needs no GPU" in message or "pip install" in message


@pytest.mark.skipif(HAS_TRT, reason="this machine can run TensorRT")
def test_build_engine_fails_before_writing_anything(tmp_path):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"not used")
    with pytest.raises(trt.TensorRTUnavailable):
        trt.build_engine(onnx_file, tmp_path / "m.engine", (32, 32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.skipif(HAS_TRT, reason="this machine can run TensorRT")
@pytest.mark.parametrize("extra", [[], ["--precision", "fp16"], ["--device", "cuda"]])
def test_profile_tensorrt_backend_exits_2_with_one_line(tmp_path, capsys, extra):
    code = profile_cli.main(["darts_v2", "--backend", "tensorrt", *extra, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and expected_reason() in err[0]
    assert not (tmp_path / "out").exists()


def test_tensorrt_version_probe_never_touches_the_gpu():
    version = trt.tensorrt_version()
    assert version is None or version[0].isdigit()


# --------------------------------------------------------------------------- cdarts-export deployment options


def export(capsys, *args: str) -> tuple[int, str]:
    from cdarts_deploy import export_cli

    try:
        code = export_cli.main(list(args))
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.skipif(HAS_TRT, reason="this machine can run TensorRT")
def test_export_trt_without_gpu_is_one_line_exit_2(tmp_path, capsys):
    code, err = export(capsys, "darts_v2", "--trt", "--fp16", "--out", str(tmp_path / "out"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and expected_reason() in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, needle",
    [(["--int8"], "--int8 needs --calib-dir"), (["--fp16", "--int8"], "exclude each other"),
     (["--check", "--calib-dir", "/no/such/folder"], "does not exist")],
)
def test_export_option_errors(tmp_path, capsys, args, needle):
    code, err = export(capsys, "darts_v2", *args, "--out", str(tmp_path / "out"))
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_export_plot_alone_writes_only_pictures(tmp_path, capsys):
    code, _ = export(capsys, "cdarts_b", "--plot", "--out", str(tmp_path))
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cdarts_b_chain.png", "cdarts_b_chain.svg"]


def test_export_int8_check_features_plot(tmp_path, capsys):
    import json

    from tiny_deploy import calibration_dir

    genotype = tmp_path / "tinynet.json"
    doc = json.loads((Path(__file__).parents[1] / "cdarts_deploy" / "zoo" / "cdarts_cifar.json").read_text())
    doc.update(name="tinynet", network={"layout": "cifar", "width": 8, "cells": 5, "num_classes": 10,
                                         "input_size": 32})
    genotype.write_text(json.dumps(doc))
    out = tmp_path / "out"
    code, err = export(capsys, str(genotype), "--exporter", "torchscript", "--int8", "--calib-dir",
                       str(calibration_dir()), "--check", "--features", "--plot", "--latency-iters", "0",
                       "--out", str(out))
    report_path = out / "tinynet.json"
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["tinynet.features.onnx", "tinynet.int8.onnx", "tinynet.json", "tinynet.onnx",
                     "tinynet_normal.png", "tinynet_normal.svg", "tinynet_reduce.png", "tinynet_reduce.svg"]
    report = json.loads(report_path.read_text())
    rows = report["check"]["results"]
    fp32 = [r for r in rows if r["precision"] == "fp32"]
    assert {r["input"] for r in fp32} == {"random b1", "random b2", "images"}
    assert all(r["passed"] and r["cosine"] > 0.9999 for r in fp32)
    int8 = [r for r in rows if r["precision"] == "int8"]
    assert {r["input"] for r in int8} == {"random b1", "random b2", "images"}
    assert report["int8"]["top1_agreement_onnxruntime"] >= report["check"]["tolerances"]["int8"]["min_top1_agreement"]
    feats = report["features"]
    assert feats["reductions"] == [1, 2, 4] and len(feats["outputs"]) == 3
    assert all(p["passed"] for p in feats["parity"])
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "tinynet.features.onnx"), providers=["CPUExecutionProvider"])
    shapes = [o.shape[1:] for o in session.run(None, {"input": np.zeros((1, 3, 32, 32), np.float32)})]
    assert [list(s) for s in shapes] == [[c, 32 // r, 32 // r] for c, r in zip(feats["channels"], feats["reductions"])]
