"""`cdarts-export` end to end (ONNX, deployment options, pictures), including its failure cases."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from backbones.factory import create_model_from_genotype
from cdarts_deploy import genotype as gt
from cdarts_deploy.commands.export import main

SMALL_CELL = ["--width", "8", "--cells", "5", "--input-size", "32", "--latency-iters", "2"]
# The tracing exporter (the default) is several times faster; the dynamo exporter is covered by the first test.
FAST = ["--exporter", "torchscript"]


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _small_darts(num_classes=10):
    torch.manual_seed(0)
    return create_model_from_genotype("darts_v2", layout="cifar", width=8, cells=5, num_classes=num_classes).eval()


def test_export_cell_genotype_writes_verified_onnx_and_report(tmp_path, capsys):
    code, out, err = _run(["darts_v2", "--onnx", "--out", tmp_path, *SMALL_CELL, "--exporter", "dynamo"], capsys)
    assert code == 0, err
    onnx_path, report_path = tmp_path / "darts_v2.onnx", tmp_path / "darts_v2.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["darts_v2.json", "darts_v2.onnx"]
    proto = onnx.load(str(onnx_path))
    onnx.checker.check_model(proto, full_check=True)
    assert not {n.op_type for n in proto.graph.node} & {"Dropout"}
    report = json.loads(report_path.read_text())
    assert report["params"] == sum(p.numel() for p in _small_darts().parameters())
    assert report["macs"] > 0 and report["macs_inclusive"] > report["macs"]
    assert report["genotype"] == gt.to_dict(gt.load("darts_v2"))
    assert report["input_shape"] == ["batch", 3, 32, 32]
    assert report["exporter"] == "dynamo"
    assert {p["batch"] for p in report["parity"]} == {1, 2}
    assert all(p["passed"] and p["max_abs"] < 1e-4 for p in report["parity"])
    assert report["versions"]["torch"] == torch.__version__
    assert "darts_v2.onnx" in out
    # dynamic batch: a batch size never seen at export runs
    assert _ort(onnx_path, np.zeros((5, 3, 32, 32), np.float32)).shape == (5, 10)
    # random weights get calibrated BN statistics, so the logits depend on the input (else parity means nothing)
    logits = _ort(onnx_path, np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32))
    assert np.abs(logits[0] - logits[1]).max() > 1e-3 * np.abs(logits).max()
    assert report["weights"].startswith("random init")


def test_checkpoint_weights_reach_the_onnx_model(tmp_path, capsys):
    model = _small_darts()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, ckpt)
    code, _, err = _run(["darts_v2", "--onnx", "--out", tmp_path, "--checkpoint", ckpt, *SMALL_CELL, *FAST], capsys)
    assert code == 0, err
    np.testing.assert_allclose(_ort(tmp_path / "darts_v2.onnx", x), expected, atol=1e-4, rtol=1e-3)


def test_export_chain_genotype(tmp_path, capsys):
    code, _, err = _run(
        ["cdarts_a", "--onnx", "--out", tmp_path, "--input-size", "64", "--num-classes", "7", "--latency-iters", "0",
         *FAST],
        capsys,
    )
    assert code == 0, err
    report = json.loads((tmp_path / "cdarts_a.json").read_text())
    assert report["network"]["num_classes"] == 7
    assert _ort(tmp_path / "cdarts_a.onnx", np.zeros((3, 3, 64, 64), np.float32)).shape == (3, 7)


def test_export_legacy_reference_file(tmp_path, capsys):
    from genotype_samples import DARTS_V2_LEGACY

    legacy = tmp_path / "best.json"
    legacy.write_text(json.dumps({"0": DARTS_V2_LEGACY, "1": DARTS_V2_LEGACY, "2": DARTS_V2_LEGACY}))
    code, _, err = _run([legacy, "--onnx", "--out", tmp_path / "o", *SMALL_CELL, *FAST], capsys)
    assert code == 0, err
    assert (tmp_path / "o" / "best.onnx").is_file()


def _assert_clean_failure(code, err, out_dir: Path, fragment: str):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[cdarts-export]")]
    assert len(lines) == 1, err
    assert fragment in lines[0]
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_failure_missing_file(tmp_path, capsys):
    code, _, err = _run([tmp_path / "nope.json", "--onnx", "--out", tmp_path / "o"], capsys)
    _assert_clean_failure(code, err, tmp_path / "o", "file not found")


def test_failure_unknown_zoo_name(tmp_path, capsys):
    code, _, err = _run(["cdarts_z", "--onnx", "--out", tmp_path / "o"], capsys)
    _assert_clean_failure(code, err, tmp_path / "o", "no file or zoo genotype named 'cdarts_z'")


def test_failure_malformed_genotype(tmp_path, capsys):
    doc = gt.to_dict(gt.load("darts_v2"))
    doc["stages"][0]["reduce"][2][0] = ["conv_9x9", 0]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    code, _, err = _run([bad, "--onnx", "--out", tmp_path / "o"], capsys)
    _assert_clean_failure(code, err, tmp_path / "o", "stages[0].reduce[2][0][0]")


def test_failure_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _run(["darts_v2", "--onnx", "--out", blocker / "sub", *SMALL_CELL], capsys)
    assert code == 2 and "writable --out" in err
    code, _, err = _run(["darts_v2", "--onnx", "--out", blocker, *SMALL_CELL], capsys)
    assert code == 2 and "is a file" in err


def test_failure_checkpoint_that_does_not_fit(tmp_path, capsys):
    other = create_model_from_genotype("darts_v2", layout="cifar", width=12, cells=5, num_classes=10)
    ckpt = tmp_path / "wide.pth"
    torch.save(other.state_dict(), ckpt)
    out_dir = tmp_path / "o"
    code, _, err = _run(["darts_v2", "--onnx", "--out", out_dir, "--checkpoint", ckpt, *SMALL_CELL], capsys)
    _assert_clean_failure(code, err, out_dir, "does not fit this network")
    assert "--layout/--width" in err


def test_failure_unsafe_or_corrupt_checkpoint(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x04not really a checkpoint")
    code, _, err = _run(["darts_v2", "--onnx", "--out", tmp_path / "o", "--checkpoint", corrupt, *SMALL_CELL], capsys)
    _assert_clean_failure(code, err, tmp_path / "o", "cannot be loaded safely")

    import argparse

    unsafe = tmp_path / "unsafe.pth"  # an arbitrary object: weights_only loading must refuse it
    torch.save({"state_dict": _small_darts().state_dict(), "extra": argparse.Namespace(x=1)}, unsafe)
    code, _, err = _run(["darts_v2", "--onnx", "--out", tmp_path / "o", "--checkpoint", unsafe, *SMALL_CELL], capsys)
    _assert_clean_failure(code, err, tmp_path / "o", "cannot be loaded safely")


def test_failure_usage(tmp_path, capsys):
    code, _, err = _run(["darts_v2", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "pass --onnx" in err
    with pytest.raises(SystemExit) as info:
        main(["darts_v2", "--onnx", "--input-size", "abc"])
    assert info.value.code == 2
    code, _, err = _run(["cdarts_a", "--onnx", "--width", "8", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "cell genotypes only" in err


def test_console_script_is_installed(tmp_path):
    exe = shutil.which("cdarts-export", path=str(Path(sys.executable).parent))
    assert exe, "cdarts-export is not on the venv's PATH"
    proc = subprocess.run([exe, "nothing_here", "--onnx", "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "nothing_here" in proc.stderr


# --------------------------------------------------------------------------- deployment options


def export(capsys, *args: str) -> tuple[int, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, needle",
    [(["--int8"], "--int8 needs --calib-dir"), (["--fp16", "--int8"], "exclude each other"),
     (["--check", "--calib-dir", "/no/such/folder"], "does not exist"),
     (["--trt", "--int8", "--int8-target", "onnxruntime"], "use --int8-target tensorrt")],
)
def test_export_option_errors(tmp_path, capsys, args, needle):
    code, err = export(capsys, "darts_v2", *args, "--out", str(tmp_path / "out"))
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_export_plot_alone_writes_only_pictures(tmp_path, capsys):
    code, _ = export(capsys, "cdarts_b", "--plot", "--out", str(tmp_path))
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cdarts_b_chain.png", "cdarts_b_chain.svg"]


def test_export_int8_check_features_plot(tmp_path, capsys, calibration_dir):
    genotype = tmp_path / "tinynet.json"
    doc = json.loads((Path(__file__).parents[1] / "cdarts_deploy" / "zoo" / "cdarts_cifar.json").read_text())
    doc.update(name="tinynet", network={"layout": "cifar", "width": 8, "cells": 5, "num_classes": 10,
                                         "input_size": 32})
    genotype.write_text(json.dumps(doc))
    out = tmp_path / "out"
    code, err = export(capsys, str(genotype), "--exporter", "torchscript", "--int8", "--calib-dir",
                       str(calibration_dir), "--check", "--features", "--plot", "--latency-iters", "0",
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
    # the one rule: every float row carries the float32 noise its tolerance was widened by
    assert all(r["torch_fp32_noise"] >= 0 for r in fp32)
    int8 = [r for r in rows if r["precision"] == "int8"]
    assert {r["input"] for r in int8} == {"random b1", "random b2", "images"}
    held_out = report["int8"]["held_out"]
    assert held_out["top1_agreement"] >= report["check"]["tolerances"]["int8"]["min_top1_agreement"]
    # calibrated on one half of the 40 pictures, judged on the other half
    assert report["int8"]["calibration_images"] == 20 and held_out["images"] == 20
    assert report["int8"]["target"] == "onnxruntime" and report["int8"]["format"] == "QOperator"
    # by default the file is exact on every x86-64 CPU, and says so in its metadata
    cpu = report["int8"]["int8_cpu"]
    assert cpu["requested"] == "portable" and cpu["form"] == "portable" and cpu["non_vnni_check"]["safe"]
    metadata = {p.key: p.value for p in onnx.load(str(out / "tinynet.int8.onnx")).metadata_props}
    assert metadata["cdarts.int8_cpu"] == "portable"
    low, high = held_out["wilson95"]
    assert 0 <= low <= held_out["top1_agreement"] <= high <= 1
    assert report["int8"]["speed_onnxruntime_cpu"]["int8_speedup"] > 0
    feats = report["features"]
    assert feats["reductions"] == [1, 2, 4] and len(feats["outputs"]) == 3
    assert all(p["passed"] for p in feats["parity"])
    assert all("torch_fp32_noise" in p for p in feats["parity"])
    session = ort.InferenceSession(str(out / "tinynet.features.onnx"), providers=["CPUExecutionProvider"])
    shapes = [o.shape[1:] for o in session.run(None, {"input": np.zeros((1, 3, 32, 32), np.float32)})]
    assert [list(s) for s in shapes] == [[c, 32 // r, 32 // r] for c, r in zip(feats["channels"], feats["reductions"])]


def test_export_fp16_is_checked_at_the_fp16_tolerance(tmp_path, capsys):
    code, err = export(capsys, "darts_v2", "--fp16", *SMALL_CELL, *FAST, "--out", str(tmp_path))
    assert code == 0, err
    report = json.loads((tmp_path / "darts_v2.json").read_text())
    fp16 = [r for r in report["check"]["results"] if r["precision"] == "fp16"]
    assert fp16 and all(r["passed"] for r in fp16)
    assert {r["input"] for r in fp16} == {"random b1", "random b2"}
    assert (tmp_path / "darts_v2.fp16.onnx").is_file()


def test_written_files_get_the_umask_mode(tmp_path, capsys):
    import os

    code, err = export(capsys, "darts_v2", "--onnx", "--plot", *SMALL_CELL, *FAST, "--out", str(tmp_path))
    assert code == 0, err
    mask = os.umask(0)
    os.umask(mask)
    for path in tmp_path.iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path


HAS_TRT = torch.cuda.is_available() and __import__("importlib").util.find_spec("tensorrt") is not None


@pytest.mark.skipif(HAS_TRT, reason="this machine can run TensorRT")
def test_export_trt_without_gpu_is_one_line_exit_2(tmp_path, capsys):
    reason = "NVIDIA GPU" if not torch.cuda.is_available() else "'tensorrt' Python package"
    code, err = export(capsys, "darts_v2", "--trt", "--fp16", "--out", str(tmp_path / "out"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and reason in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("speedup, says_slower", [(0.88, True), (1.25, False)])
def test_summary_says_when_int8_is_slower_than_fp32(capsys, tmp_path, speedup, says_slower):
    from cdarts_deploy.commands.export import _print_summary

    report = {"parity": [{"batch": 1, "max_abs": 1e-5}], "onnx_bytes": 1e6, "params": 10, "macs": 1e6,
              "macs_inclusive": 1e6, "input_shape": [1, 3, 8, 8],
              "int8": {"target": "onnxruntime", "held_out": {"top1_agreement": 1.0, "images": 8, "wilson95": [0.7, 1.0],
                                                             "logit_cosine": 0.999},
                       "speed_onnxruntime_cpu": {"int8_speedup": speedup, "batch": 1, "fp32_median_ms": 8.5,
                                                 "int8_median_ms": 8.5 / speedup}}}
    _print_summary(report, [], tmp_path / "m.onnx", tmp_path / "m.json")
    line = next(l for l in capsys.readouterr().out.splitlines() if "int8 speed-up" in l)
    assert f"{speedup:.2f}x" in line and ("slower than fp32" in line) == says_slower
