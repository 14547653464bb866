"""cdarts-profile: statistics, timing loops, ONNX multiply-adds, reports, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from cdarts_deploy import profile_cli, profiling
from cdarts_deploy.gemm import achieved_gflops, compute_floor_ms, measure_gemm_rate, onnx_macs

from tiny_deploy import HW, tiny_network


@pytest.fixture(scope="module")
def tiny():
    return tiny_network()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cdarts_deploy.profile_cli", *args], capture_output=True, text=True,
                          timeout=300)


# --------------------------------------------------------------------------- statistics and timing


def test_summarize_matches_hand_computed_percentiles():
    times = [float(v) for v in range(1, 101)]  # 1..100 ms
    s = profiling.summarize(times, batch=4, warmup=3)
    assert s.mean_ms == 50.5 and s.median_ms == 50.5
    # numpy's linear interpolation: position q*(n-1) in the sorted list
    assert s.p90_ms == pytest.approx(1 + 0.90 * 99)
    assert s.p95_ms == pytest.approx(1 + 0.95 * 99)
    assert s.p99_ms == pytest.approx(1 + 0.99 * 99)
    assert s.std_ms == pytest.approx(np.sqrt(sum((t - 50.5) ** 2 for t in times) / 99))
    assert (s.min_ms, s.max_ms, s.iters, s.warmup) == (1.0, 100.0, 100, 3)
    assert s.throughput_ips == pytest.approx(4 / 0.0505)


def test_time_host_runs_warmup_untimed_and_times_each_call():
    calls = []

    def step():
        calls.append(time.perf_counter())
        time.sleep(0.002)

    times = profiling.time_host(step, warmup=3, iters=5)
    assert len(calls) == 8 and len(times) == 5
    assert all(t >= 2.0 for t in times)


def test_compute_floor_and_achieved_rate():
    # 1 GMAC at 100 GFLOP/s: 2e9 flops / 1e11 flop/s = 20 ms
    assert compute_floor_ms(1e9, 100.0) == pytest.approx(20.0)
    assert achieved_gflops(1e9, 40.0) == pytest.approx(50.0)


def test_gemm_rate_is_measured_and_plausible():
    rate = measure_gemm_rate(threads=1, sizes=(128, 256), repeats=3)
    assert rate.size in (128, 256) and rate.threads == 1
    assert 0.1 < rate.gflops < 5000


def test_onnx_macs_agree_with_the_pytorch_counter(tiny):
    from backbones.complexity import count_macs

    model, path, _ = tiny
    assert onnx_macs(path, 1, HW) == count_macs(model, HW)
    assert onnx_macs(path, 3, HW) == 3 * count_macs(model, HW)


# --------------------------------------------------------------------------- full runs


def test_profile_genotype_with_torch_writes_json_markdown_png(tmp_path):
    genotype = tmp_path / "tiny.json"
    genotype.write_text(json.dumps({
        "format": "cdarts-genotype", "version": 1, "kind": "cell", "name": "tinynet",
        "stages": json.loads(open(__import__("cdarts_deploy").__path__[0] + "/zoo/cdarts_cifar.json").read())["stages"],
        "network": {"layout": "cifar", "width": 8, "cells": 5, "num_classes": 10, "input_size": 32},
    }))
    out = tmp_path / "reports"
    code = profile_cli.main([str(genotype), "--backend", "torch", "--batch", "1,2", "--iters", "4", "--warmup", "1",
                             "--threads", "1", "--gemm-sizes", "256", "--out", str(out), "--name", "rep"])
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
    cond = report["conditions"]
    assert cond["threads"] == 1 and cond["cpu"] and cond["versions"]["torch"] and cond["device"] == "cpu"
    assert [p["latency_ms"] for p in report["published"]["rows"]][0] == 41.2
    md = (out / "rep.md").read_text()
    assert "| tinynet | torch | fp32 | 2x3x32x32 |" in md
    assert "Published reference (not measured)" in md and "41.2" in md and "P100" in md
    with Image.open(out / "rep.png") as img:
        assert img.format == "PNG" and img.width > 300


def test_profile_onnx_file_with_onnxruntime_and_fp16(tiny, tmp_path):
    _, path, _ = tiny
    code = profile_cli.main([str(path), "--batch", "2", "--iters", "3", "--warmup", "1", "--threads", "1",
                             "--precision", "fp16", "--no-gemm", "--out", str(tmp_path), "--name", "ort"])
    assert code == 0
    report = json.loads((tmp_path / "ort.json").read_text())
    (row,) = report["rows"]
    assert (row["backend"], row["precision"], row["input_shape"]) == ("onnxruntime", "fp16", [2, 3, 32, 32])
    assert row["macs"] == onnx_macs(path, 1, HW)
    assert report["gemm_rate"] is None and "compute_floor_ms" not in row["derived"]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args, needle",
    [
        (["darts_v2", "--backend", "tflite"], "unknown backend 'tflite'"),
        (["darts_v2", "--batch", "1,x"], "do not parse"),
        (["darts_v2", "--batch", "0"], "positive integers"),
        (["darts_v2", "--backend", "tensorrt"], "NVIDIA GPU"),
        (["no_such_genotype"], "no file or zoo genotype"),
        (["darts_v2", "--precision", "int8", "--backend", "onnxruntime"], "--calib-dir"),
        (["darts_v2", "--peers", "resnet_imaginary"], "unknown peer"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, needle):
    try:
        code = profile_cli.main([*args, "--out", str(tmp_path / "out")])
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
    assert not list((tmp_path / "out").iterdir())


def test_torch_backend_needs_a_genotype(tiny, tmp_path):
    _, path, _ = tiny
    code = profile_cli.main([str(path), "--backend", "torch", "--out", str(tmp_path)])
    assert code == 2 and not list(tmp_path.iterdir())


def test_interrupt_leaves_no_report(monkeypatch, tmp_path, capsys):
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(profiling, "measure_torch", interrupted)
    code = profile_cli.main(["darts_v2", "--backend", "torch", "--width", "8", "--cells", "5", "--out", str(tmp_path)])
    assert code == 130 and calls["n"] == 1
    assert capsys.readouterr().err.strip().endswith("interrupted; no report written")
    assert list(tmp_path.iterdir()) == []


def test_report_writing_failure_leaves_nothing(monkeypatch, tmp_path):
    report = profiling.make_report([], profiling.conditions(1, "cpu"), None)

    def broken_plot(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(profiling, "plot_latency_vs_macs", broken_plot)
    with pytest.raises(RuntimeError):
        profiling.write_reports(report, tmp_path, "x")
    assert list(tmp_path.iterdir()) == []


def test_default_peers_are_all_known():
    import timm

    import backbones  # noqa: F401  (registers the zoo models)
    from cdarts_deploy import genotype as gt

    names = profile_cli.resolve_peers("default")
    assert {"efficientnet_b0", "mobilenetv3_large_100", "mnasnet_100"} <= set(names)
    assert all(n in gt.zoo_names() or timm.is_model(n) for n in names)
