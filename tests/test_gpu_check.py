"""tools/gpu_check: sections pass, fail or are not applicable; a runnable section that did not run fails the run.

The CUDA paths need a GPU; here the same section code runs with ``device='cpu'`` at toy sizes (parity with
CPU autocast, eager latency, the search-step and training benchmarks, the GEMM rate).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cdarts_deploy.deploy.model_spec import random_batch

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("single_torch_thread")  # two threads on two busy cores run 10x slower


def _load_gpu_check() -> None:
    """tools/ is not an installed package: load tools.gpu_check from its folder, as ``python -m`` from the
    root of the checkout finds it; its modules then import as usual."""
    init = ROOT / "tools" / "gpu_check" / "__init__.py"
    spec = importlib.util.spec_from_file_location("tools.gpu_check", init,
                                                  submodule_search_locations=[str(init.parent)])
    sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules[spec.name])


if "tools.gpu_check" not in sys.modules:
    _load_gpu_check()
capabilities, cli, context, device_parity, plan, settings, verdicts = (
    importlib.import_module(f"tools.gpu_check.{name}")
    for name in ("capabilities", "cli", "context", "device_parity", "plan", "settings", "verdicts"))


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    return context.build_net(settings.Net("cdarts_cifar", 32, width=8, cells=5))


def _inputs():
    return {f"random b{b}": random_batch(b, (32, 32), seed=100 + b) for b in (1, 2)}


def test_dry_run_lists_every_section_for_the_gpu_image_and_this_machine():
    proc = subprocess.run([sys.executable, "-m", "tools.gpu_check", "--dry-run"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for section in plan.sections():
        assert f"\n{section.key}: " in out
    blocks = {b.split(":")[0]: b for b in out.split("\n\n")[2].split("\n") if b and not b.startswith(" ")}
    assert set(blocks) == {s.key for s in plan.sections()}
    lines = out.splitlines()

    def line(key: str, which: str) -> str:
        i = lines.index(next(x for x in lines if x.startswith(f"{key}: ")))
        return next(x for x in lines[i + 1:i + 3] if x.strip().startswith(f"{which}:"))

    for key in ("parity", "latency_eager", "latency_cuda_graph", "latency_compile", "search_step",
                "train_throughput", "gemm"):
        assert line(key, "A").strip().startswith("A: runs"), key
    assert "not applicable: TensorRT not installed" in line("tensorrt", "A")
    assert "not applicable: onnxruntime is the CPU build" in line("onnxruntime_cuda", "A")
    if not torch.cuda.is_available():
        assert "not applicable: no CUDA device" in line("parity", "B")


def test_parity_passes_on_the_cpu_and_its_negative_controls_fail(tiny_net):
    result = device_parity.parity_for_model(tiny_net, _inputs(), "cpu")
    assert [c["passed"] for c in result["checks"]] == [True, True, True], result["checks"]
    assert {r["precision"] for r in result["parity"]} == {"fp32", "fp16", "bf16"}
    assert all(r["passed"] and r["input_dependent"] for r in result["parity"])
    assert all(r["passed"] is False for r in result["controls"])  # both controls caught at every input
    assert verdicts.judge(result) == (verdicts.PASSED, "3 check(s) passed")


def test_a_control_that_passes_fails_the_section(tiny_net):
    # zero perturbation: the "controls" are the model itself, so they pass and the check proves nothing
    result = device_parity.parity_for_model(tiny_net, _inputs(), "cpu", stem_perturbation=0.0, gross_perturbation=0.0)
    assert [c["passed"] for c in result["checks"]] == [True, False, False]
    status, reason = verdicts.judge(result)
    assert status == verdicts.FAILED and "the control passed, so the check proves nothing" in reason


def test_outputs_that_ignore_the_input_fail_parity():
    class Constant(torch.nn.Module):  # a "network" whose logits do not depend on the image
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4, 10)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)) * 0.0)

    result = device_parity.parity_for_model(Constant().eval(), _inputs(), "cpu")
    assert result["checks"][0]["passed"] is False and "proves nothing" in result["checks"][0]["detail"]
    assert verdicts.judge(result)[0] == verdicts.FAILED


def test_applicability_is_not_applicable_only_for_what_is_missing():
    section = next(s for s in plan.sections() if s.key == "tensorrt")
    ok, missing = capabilities.Capability(True), capabilities.Capability(False, "TensorRT not installed")
    broken = capabilities.Capability(False, "a GPU is present but torch cannot use it", broken=True)
    assert verdicts.applicability(section, "cuda", {"cuda": ok, "tensorrt": ok}) == ("run", "")
    assert verdicts.applicability(section, "cuda", {"cuda": ok, "tensorrt": missing}) == (verdicts.NOT_APPLICABLE,
                                                                                      "TensorRT not installed")
    assert verdicts.applicability(section, "cuda", {"cuda": broken, "tensorrt": missing})[0] == verdicts.FAILED
    caps = capabilities.probe(require_gpu=True)
    if not torch.cuda.is_available():  # --require-gpu: no GPU is a failure, not "not applicable"
        assert caps["cuda"].broken and not caps["cuda"].available
        assert not capabilities.probe()["cuda"].broken or "present" in capabilities.probe()["cuda"].reason


def _ctx(tmp_path, deadline=None):
    caps = {k: capabilities.Capability(k != "cuda", "" if k != "cuda" else "no CUDA device") for k in
            ("cuda", "triton", "cxx", "tensorrt", "onnxruntime_cuda")}
    return context.Context("cpu", settings.settings_for("cpu", quick=True), caps, tmp_path, deadline=deadline)


def test_budget_spent_inside_a_section_or_before_it_fails_the_run(tmp_path):
    ran = []

    def runs_out(ctx):  # a section that notices the budget is gone between two of its rows
        ran.append(1)
        ctx.deadline = time.monotonic() - 1
        ctx.check_budget("1 of 2 rows measured")
        return {"checks": [{"name": "never reached", "passed": True}]}

    sections = [verdicts.Section("first", "runs out", {"cpu": ()}, runs_out, lambda s, d: ""),
                verdicts.Section("second", "never starts", {"cpu": ()},
                             lambda c: {"checks": [{"name": "x", "passed": True}]}, lambda s, d: ""),
                verdicts.Section("gpu_only", "needs CUDA", {"cpu": ("cuda",)}, lambda c: {}, lambda s, d: "")]
    results = verdicts.run_sections(sections, _ctx(tmp_path))
    assert ran == [1]
    assert results["first"]["status"] == verdicts.FAILED and "1 of 2 rows" in results["first"]["reason"]
    assert results["second"]["status"] == verdicts.FAILED and "time budget" in results["second"]["reason"]
    assert results["gpu_only"] == {**results["gpu_only"], "status": verdicts.NOT_APPLICABLE, "reason": "no CUDA device"}
    assert verdicts.exit_code(results) == 1
    assert verdicts.exit_code({"gpu_only": results["gpu_only"]}) == 0


def test_an_exception_or_a_section_without_checks_fails(tmp_path):
    def boom(ctx):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    sections = [verdicts.Section("boom", "raises", {"cpu": ()}, boom, lambda s, d: ""),
                verdicts.Section("empty", "no checks", {"cpu": ()}, lambda c: {"value": 1}, lambda s, d: "")]
    results = verdicts.run_sections(sections, _ctx(tmp_path))
    assert results["boom"]["status"] == verdicts.FAILED and "illegal memory access" in results["boom"]["reason"]
    assert results["empty"]["status"] == verdicts.FAILED and "no check" in results["empty"]["reason"]


def test_main_with_no_budget_fails_every_runnable_section(tmp_path):
    code = cli.main(["--device", "cpu", "--budget-s", "0", "--out", str(tmp_path / "r")])
    assert code == 1
    report = json.loads((tmp_path / "r" / "gpu_check.json").read_text())
    sections = report["sections"]
    assert list(sections) == [s.key for s in plan.sections()]
    not_applicable = {"latency_cuda_graph", "tensorrt", "onnxruntime_cuda"} if not torch.cuda.is_available() else set()
    for key, entry in sections.items():
        if key in not_applicable:
            assert entry["status"] == verdicts.NOT_APPLICABLE, key
        elif key == "latency_compile" and not report["capabilities"]["cxx"]["available"]:
            assert entry["status"] == verdicts.NOT_APPLICABLE
        else:
            assert entry["status"] == verdicts.FAILED and "time budget" in entry["reason"], key
    assert "**FAILED**" in (tmp_path / "r" / "gpu_check.md").read_text()
    assert report["conditions"]["environment"]["format"] == "cdarts-env"


def test_cpu_run_of_the_sections_writes_both_reports(tmp_path):
    no_compile = [s for s in plan.sections() if s.key != "latency_compile"]  # inductor on two CPU cores: minutes
    code = cli.main(["--device", "cpu", "--out", str(tmp_path / "gc.json")], plan=no_compile)
    report = json.loads((tmp_path / "gc.json").read_text())
    assert code == 0, {k: v["reason"] for k, v in report["sections"].items()}
    sections = report["sections"]
    assert sections["parity"]["status"] == verdicts.PASSED
    assert {r["runtime"] for r in sections["parity"]["controls"]} == {"torch-cpu-control-stem",
                                                                      "torch-cpu-control-all"}
    eager = sections["latency_eager"]["latency"]
    assert [(r["batch"], r["mode"]) for r in eager] == [(1, "eager"), (2, "eager")]
    assert eager[0]["stats"]["iters"] == 3 and eager[0]["warmup"] == 1 and eager[0]["dtype"] == "fp32"
    ratios = sections["search_step"]["search_step"]["ratios"]
    assert ratios["step_ratio"] > 0 and ratios["measure"] == "process CPU time"
    assert sections["train_throughput"]["train_throughput"]["images_per_s_bare"] > 0
    assert sections["gemm"]["status"] == verdicts.PASSED
    md = (tmp_path / "gc.md").read_text()
    assert "**PASSED**" in md and "torch-cpu-control-stem" in md
    assert "| cdarts_cifar@32 (C=8, 5 cells) | eager | 1 |" in md
    assert "Search step: CDARTS / DARTS" in md


def test_unknown_compile_model_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["--device", "cpu", "--compile-models", "nope", "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err


def test_a_section_whose_parity_rows_were_all_reported_only_fails():
    # e.g. INT8 rows on random calibration inputs that nothing judged: the section compared nothing
    result = {"checks": [{"name": "every engine within its precision's tolerance", "passed": True}],
              "parity": [{"precision": "int8", "passed": None}, {"precision": "int8", "passed": None}]}
    assert verdicts.judge(result) == (verdicts.FAILED, "none of the 2 parity rows was judged")
    result["parity"][0]["passed"] = True
    assert verdicts.judge(result)[0] == verdicts.PASSED
