"""tools/gpu_check.py on a machine without a GPU: the CPU parts run, and the report says what was not available."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_tool():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "tools" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the tool runs its GPU sections")
def test_cpu_only_run_reports_what_it_skipped_and_checks_what_it_can(tmp_path):
    tool = load_tool()
    out = tmp_path / "report" / "gpu_check.json"
    code = tool.main(["--out", str(out), "--models", "cdarts_cifar:32", "--width", "8", "--cells", "5",
                      "--num-classes", "10", "--batch", "1,2", "--iters", "3", "--warmup", "1",
                      "--exporter", "torchscript"])
    assert code == 0
    report = json.loads(out.read_text())
    sections = report["sections"]
    machine = sections["machine"]
    assert machine["cuda_available"] is False and machine["tensorrt_available"] is False
    assert "NVIDIA GPU" in machine["tensorrt_reason"]

    # nothing that needs CUDA or TensorRT reads as passed: each is skipped, with the reason
    gpu_keys = [k for k in sections if "tensorrt" in k or "cuda" in k]
    assert {f"cdarts_cifar/tensorrt_{p}/build_and_parity" for p in ("fp32", "fp16", "int8")} <= set(gpu_keys)
    assert {"cdarts_cifar/b1/torch_compile_fp32_cuda", "cdarts_cifar/b2/onnxruntime_cuda_fp32"} <= set(gpu_keys)
    for key in gpu_keys:
        assert sections[key]["status"] == "skipped" and sections[key]["reason"], key
        assert key in report["summary"]["skipped"]

    # the CPU parts ran: export with parity at every batch (input dependence established), ORT FP16/INT8, timing
    export = sections["cdarts_cifar/onnx_export"]
    assert export["status"] == "ok" and {r["batch"] for r in export["parity"]} == {1, 2}
    assert all(r["passed"] and r["input_dependent"] for r in export["parity"])
    assert sections["cdarts_cifar/onnxruntime_cpu_fp16_parity"]["status"] == "ok"
    timed = sections["cdarts_cifar/b2/torch_eager_fp32_cpu"]
    assert timed["status"] == "ok" and timed["stats"]["iters"] == 3
    assert timed["stats"]["unsupported_percentiles"] == ["p90", "p95", "p99"]
    assert sections["gemm/before/cpu_fp32"]["status"] == "ok" and sections["gemm/after/cpu_fp32"]["status"] == "ok"
    assert report["summary"]["failed"] == {}

    md = out.with_suffix(".md").read_text()
    assert "CUDA was not available" in md and "TensorRT was not available" in md
    assert "## Skipped" in md and "tensorrt_fp32/build_and_parity" in md
    assert "- (n=3)" in md  # a percentile the sample cannot support is not printed as a number


def test_a_failed_parity_check_fails_the_section():
    tool = load_tool()
    check = tool.Check(budget_s=60)
    check.run("bad", lambda: {"parity": [{"passed": True}, {"passed": False}]})
    check.run("int8", lambda: {"parity": [{"passed": None}]})
    assert check.sections["bad"]["status"] == "failed" and "1 parity row" in check.sections["bad"]["reason"]
    assert check.sections["int8"]["status"] == "ok"
    assert tool.summary(check.sections)["failed"] == {"bad": "1 parity row(s) failed"}
