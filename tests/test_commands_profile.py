"""cdarts-profile end to end: reports of genotypes and ONNX files, TensorRT without a GPU, and bad input."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image

from cdarts_deploy.commands import profile as profile_cmd
from cdarts_deploy.deploy import profiling
from cdarts_deploy.deploy.gemm import onnx_macs
from tiny_deploy import HW

HAS_TRT = torch.cuda.is_available() and importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def tiny(tiny_network):
    return tiny_network


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cdarts_deploy.commands.profile", *args], capture_output=True,
                          text=True, timeout=300)


# --------------------------------------------------------------------------- full runs


def test_profile_genotype_with_torch_writes_json_markdown_png(tmp_path):
    genotype = _tiny_genotype(tmp_path)
    out = tmp_path / "reports"
    code = profile_cmd.main([str(genotype), "--backend", "torch", "--batch-sizes", "1,2", "--iters", "4",
                             "--warmup", "1", "--threads", "1", "--gemm-sizes", "256", "--peers", "none",
                             "--out", str(out), "--name", "rep"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["rep.json", "rep.md", "rep.png"]
    report = json.loads((out / "rep.json").read_text())
    rows = report["rows"]
    assert [(r["backend"], r["stats"]["batch"]) for r in rows] == [("torch", 1), ("torch", 2)]
    from backbones.complexity import count_macs
    from backbones.factory import create_model_from_genotype

    expected_macs = count_macs(create_model_from_genotype(str(genotype)), (32, 32))
    for r in rows:
        s = r["stats"]
        assert s["min_ms"] <= s["median_ms"] <= s["p90_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["max_ms"]
        assert s["iters"] == 4 and r["input_shape"][1:] == [3, 32, 32]
        assert r["macs"] == expected_macs
        d = r["derived"]
        assert d["compute_floor_ms"] == pytest.approx(2 * r["macs"] * s["batch"] / report["gemm_rate"]["gflops"] / 1e6)
        assert d["gemm_fraction"] == pytest.approx(d["achieved_gflops"] / report["gemm_rate"]["gflops"])
        assert "before timing" in r["timed_region"] and "outputs" in r["timed_region"]
        assert "vs_fp32" not in d  # only lower precisions are compared with fp32
    cond = report["conditions"]
    assert cond["threads"] == 1 and cond["cpu"] and cond["versions"]["torch"] and cond["device"] == "cpu"
    gemm = report["gemm_rate"]  # measured right before and after the models; the higher median counts
    assert gemm["gflops"] == max(gemm["before"]["gflops"], gemm["after"]["gflops"])
    assert gemm["before"]["loadavg"] and gemm["spread"]["min"] <= gemm["gflops"] <= gemm["spread"]["max"]
    assert cond["samples"]["timed_runs_per_row"] == 4 and cond["samples"]["unsupported_percentiles"] == [
        "p90", "p95", "p99"]
    assert all(r["stats"]["p99_samples"] == 4 for r in rows)
    assert cond["load"]["loadavg"] and cond["onnxruntime"]["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert [p["latency_ms"] for p in report["published"]["rows"]][0] == 41.2
    md = (out / "rep.md").read_text()
    assert "| tinynet | torch | fp32 | 2x3x32x32 |" in md
    assert "Published reference (not measured)" in md and "41.2" in md and "P100" in md
    assert "samples.timed_runs_per_row: 4" in md and "unsupported_percentiles: ['p90', 'p95', 'p99']" in md
    with Image.open(out / "rep.png") as img:
        assert img.format == "PNG" and img.width > 300


def test_profile_onnx_file_with_onnxruntime_and_fp16(tiny, tmp_path):
    _, path, _ = tiny
    code = profile_cmd.main([str(path), "--batch-sizes", "2", "--iters", "3", "--warmup", "1", "--threads", "1",
                             "--precision", "fp16", "--no-gemm", "--peers", "none", "--out", str(tmp_path),
                             "--name", "ort"])
    assert code == 0
    report = json.loads((tmp_path / "ort.json").read_text())
    (row,) = report["rows"]
    assert (row["backend"], row["precision"], row["input_shape"]) == ("onnxruntime", "fp16", [2, 3, 32, 32])
    assert row["macs"] == onnx_macs(path, 1, HW)
    assert report["gemm_rate"] is None and "compute_floor_ms" not in row["derived"]


def test_int8_row_is_compared_with_fp32_in_the_same_run(tiny, calibration_dir, tmp_path, monkeypatch):
    from cdarts_deploy.deploy import ort

    _, path, _ = tiny
    opened = []
    real_session = ort.session

    def recording_session(model, *args, **kwargs):
        opened.append(str(model))
        return real_session(model, *args, **kwargs)

    monkeypatch.setattr(ort, "session", recording_session)
    code = profile_cmd.main([str(path), "--batch-sizes", "1", "--iters", "6", "--warmup", "1", "--threads", "1",
                             "--precision", "int8", "--calib-dir", str(calibration_dir), "--no-gemm", "--peers",
                             "none", "--out", str(tmp_path / "out"), "--name", "q"])
    assert code == 0
    (row,) = json.loads((tmp_path / "out" / "q.json").read_text())["rows"]
    v = row["derived"]["vs_fp32"]
    assert v["speedup"] == pytest.approx(v["fp32_median_ms"] / v["median_ms"])
    assert v["timed_runs_each"] == 5  # 5 rounds of one run each for 6 iterations
    # the comparison opened the original fp32 file and the INT8 file made from it, not one file twice
    assert str(path) in opened and any(".int8." in p for p in opened)
    md = (tmp_path / "out" / "q.md").read_text()
    assert "## Against fp32, interleaved in this run" in md
    assert f"| {row['model']} | onnxruntime | int8 | 1x3x32x32 | {v['fp32_median_ms']:.2f} |" in md


def _calibration_with_a_truncated_png(calibration_dir, tmp_path):
    calib = tmp_path / "calib"
    shutil.copytree(calibration_dir, calib)
    good = sorted(calib.glob("*.png"))[0].read_bytes()
    (calib / "aaa_truncated.png").write_bytes(good[: len(good) // 2])
    return calib


def test_a_bad_calibration_image_stops_before_any_work_unless_skipped(tiny, calibration_dir, tmp_path, capsys):
    _, path, _ = tiny
    calib = _calibration_with_a_truncated_png(calibration_dir, tmp_path)
    args = [str(path), "--batch-sizes", "1", "--iters", "2", "--warmup", "0", "--threads", "1", "--precision", "int8",
            "--calib-dir", str(calib), "--no-gemm", "--peers", "none", "--name", "q"]
    code = profile_cmd.main([*args, "--out", str(tmp_path / "refused")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "aaa_truncated.png" in err and "--bad-images skip" in err, err
    assert not (tmp_path / "refused").exists()

    code = profile_cmd.main([*args, "--bad-images", "skip", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "skipped 1 bad image file(s)" in err
    (row,) = json.loads((tmp_path / "out" / "q.json").read_text())["rows"]
    assert row["precision"] == "int8"


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args, needle",
    [
        (["darts_v2", "--backend", "tflite"], "unknown backend 'tflite'"),
        (["darts_v2", "--batch-sizes", "1,x"], "do not parse"),
        (["darts_v2", "--batch-sizes", "0"], "positive integers"),
        (["darts_v2", "--backend", "tensorrt"], "NVIDIA GPU"),
        (["no_such_genotype"], "no file or zoo genotype"),
        (["darts_v2", "--precision", "int8", "--backend", "onnxruntime"], "--calib-dir"),
        (["darts_v2", "--peers", "resnet_imaginary"], "unknown peer"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, needle):
    if "tensorrt" in args and HAS_TRT:
        pytest.skip("this machine can run TensorRT")
    try:
        code = profile_cmd.main([*args, "--out", str(tmp_path / "out")])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_file_that_is_not_onnx_is_rejected(tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"definitely not a protobuf \x00\x01")
    result = run_cli(str(bogus), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "is not a valid ONNX model" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before the output folder is made


def test_torch_backend_needs_a_genotype(tiny, tmp_path):
    _, path, _ = tiny
    code = profile_cmd.main([str(path), "--backend", "torch", "--out", str(tmp_path)])
    assert code == 2 and not list(tmp_path.iterdir())


def test_interrupt_leaves_no_report(monkeypatch, tmp_path, capsys):
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(profiling, "measure_torch", interrupted)
    code = profile_cmd.main(["darts_v2", "--backend", "torch", "--width", "8", "--cells", "5", "--no-gemm",
                             "--peers", "none", "--out", str(tmp_path)])
    assert code == 130 and calls["n"] == 1
    assert capsys.readouterr().err.strip().endswith("interrupted; no report written")
    assert list(tmp_path.iterdir()) == []


def test_default_iterations_support_every_printed_percentile():
    from cdarts_deploy.deploy.timing import PERCENTILE_MIN_SAMPLES

    assert profile_cmd.build_parser().parse_args(["x"]).iters >= max(PERCENTILE_MIN_SAMPLES.values())


def test_default_peers_are_the_timm_trio_and_the_zoo_models_of_the_same_layout():
    import timm

    from cdarts_deploy import genotype as gt
    from cdarts_deploy.deploy.subjects import TIMM_PEERS, resolve_peers

    trio = ["efficientnet_b0", "mobilenetv3_large_100", "mnasnet_100"]
    assert list(TIMM_PEERS) == trio and all(timm.is_model(n) for n in trio)
    # the command's default is 'default'; nothing given means the same
    assert profile_cmd.build_parser().parse_args(["x"]).peers == "default"
    assert resolve_peers(None, "cifar", exclude=["cdarts_cifar"]) == resolve_peers("default", "cifar",
                                                                                    exclude=["cdarts_cifar"])
    cifar = resolve_peers("default", "cifar", exclude=["cdarts_cifar"])
    assert cifar == trio + ["darts_v1", "darts_v2", "pcdarts_cifar", "pdarts"]
    assert resolve_peers("default", "imagenet", exclude=["cdarts_imagenet"]) == trio + ["pcdarts_imagenet"]
    assert resolve_peers("default", "chain", exclude=["cdarts_b"]) == trio + ["cdarts_a"]
    # an ONNX file (no layout): the zoo models of its input size
    assert resolve_peers("default", None, (32, 32)) == trio + sorted(
        ["cdarts_cifar", "darts_v1", "darts_v2", "pcdarts_cifar", "pdarts"])
    assert set(resolve_peers("default", None, (224, 224))) - set(trio) == {
        "cdarts_a", "cdarts_b", "cdarts_imagenet", "pcdarts_imagenet"}
    assert resolve_peers("none", "cifar") == [] and resolve_peers(" none ", None, (32, 32)) == []
    assert resolve_peers("darts_v2,resnet18,darts_v2") == ["darts_v2", "resnet18"]
    assert all(n in gt.zoo_names() for n in cifar[3:])


def _tiny_genotype(tmp_path):
    genotype = tmp_path / "tiny.json"
    genotype.write_text(json.dumps({
        "format": "cdarts-genotype", "version": 1, "kind": "cell", "name": "tinynet",
        "stages": json.loads(open(__import__("cdarts_deploy").__path__[0] + "/zoo/cdarts_cifar.json").read())["stages"],
        "network": {"layout": "cifar", "width": 8, "cells": 5, "num_classes": 10, "input_size": 32},
    }))
    return genotype


def test_peers_none_profiles_and_plots_the_target_alone(tmp_path, capsys):
    from cdarts_deploy.deploy import profile_report as rep

    code = profile_cmd.main([str(_tiny_genotype(tmp_path)), "--backend", "torch", "--iters", "2", "--warmup", "0",
                             "--threads", "1", "--no-gemm", "--peers", "none", "--out", str(tmp_path / "out")])
    assert code == 0
    assert "peers, measured" not in capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "profile_tinynet.json").read_text())
    assert [(r["model"], r["peer"]) for r in report["rows"]] == [("tinynet", False)]
    points = rep.plot_latency_vs_macs(report, tmp_path / "again.png")
    assert [(p["model"], p["peer"]) for p in points] == [("tinynet", False)]


def test_default_run_measures_and_plots_the_default_peers_in_the_same_run(tmp_path, monkeypatch, capsys):
    """Without --peers the default peers are built, timed in the same run and plotted (tiny stand-ins here)."""
    from cdarts_deploy.deploy import profile_report as rep
    from cdarts_deploy.deploy import subjects as sj

    built = []

    def stand_in(name):
        built.append(name)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                    torch.nn.Linear(4, 10)).eval()
        return sj.Subject(name, model, None, (32, 32), 100, 1000 * (len(built) + 1), True)

    real_from_genotype = sj.from_genotype

    def from_genotype(genotype, *args, peer=False, name=None, **kwargs):
        return stand_in(name) if peer else real_from_genotype(genotype, *args, **kwargs)

    monkeypatch.setattr(sj, "from_timm", lambda name, hw, classes: stand_in(name))
    monkeypatch.setattr(sj, "from_genotype", from_genotype)
    code = profile_cmd.main([str(_tiny_genotype(tmp_path)), "--backend", "torch", "--iters", "2", "--warmup", "0",
                             "--threads", "1", "--no-gemm", "--out", str(tmp_path / "out")])
    assert code == 0
    expected = sj.resolve_peers("default", "cifar", exclude=["tinynet"])
    assert sorted(built) == sorted(expected) and len(expected) == 8
    assert "peers, measured in this run" in capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "profile_tinynet.json").read_text())
    assert [r["model"] for r in report["rows"] if not r["peer"]] == ["tinynet"]
    assert sorted(r["model"] for r in report["rows"] if r["peer"]) == sorted(expected)
    points = rep.plot_latency_vs_macs(report, tmp_path / "again.png")
    assert len(points) == 1 + len(expected) and sum(not p["peer"] for p in points) == 1


def expected_trt_reason() -> str:
    return "NVIDIA GPU" if not torch.cuda.is_available() else "'tensorrt' Python package"


@pytest.mark.skipif(HAS_TRT, reason="this machine can run TensorRT")
@pytest.mark.parametrize("extra", [[], ["--precision", "fp16"], ["--device", "cuda"]])
def test_profile_tensorrt_backend_exits_2_with_one_line(tmp_path, capsys, extra):
    code = profile_cmd.main(["darts_v2", "--backend", "tensorrt", *extra, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and expected_trt_reason() in err[0]
    assert not (tmp_path / "out").exists()


def test_onnxruntime_backend_exports_through_the_verified_pipeline(tmp_path, monkeypatch, capsys):
    """A genotype timed under ONNX Runtime is exported and checked first; a file that fails is refused (exit 1)."""
    from cdarts_deploy.deploy import pipeline

    real_export = pipeline.export_onnx

    def scaled_export(model, path, *args, **kwargs):
        class Scaled(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = model

            def forward(self, x):
                return self.inner(x) * 1.5 + 1.0

        real_export(Scaled().eval(), path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "export_onnx", scaled_export)
    code = profile_cmd.main(["darts_v2", "--width", "8", "--cells", "5", "--backend", "onnxruntime", "--iters", "1",
                             "--warmup", "0", "--no-gemm", "--peers", "none", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "differs from PyTorch" in err
    assert not list((tmp_path / "out").iterdir())
