"""The sections that run the project's benchmark scripts or kernels: search-step ratio, retraining throughput,
GEMM ceiling."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import torch

from cdarts_deploy.deploy.gemm import measure_gemm_rate, torch_threads
from cdarts_deploy.deploy.profiling import fp32_math

from .context import Context

ROOT = Path(__file__).resolve().parents[2]


def load_benchmark(name: str) -> Any:
    """A script of ``benchmarks/`` as a module (it is not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def search_step_section(ctx: Context) -> dict:
    bench = load_benchmark("search_step")
    times = {}
    for method in ("darts", "cdarts"):
        ctx.check_budget(f"before {method}")
        with torch_threads(None):  # the benchmark sets the thread count; restored after
            times[method] = bench.step_times(method, device=ctx.device, **ctx.settings.search)
        if ctx.device.startswith("cuda"):
            torch.cuda.empty_cache()
    ratios = bench.ratios(times["darts"], times["cdarts"])
    values = [v for t in times.values() for k, v in t.items() if k.endswith("_s")] + \
        [ratios["step_ratio"], ratios["step_with_stage1_ratio"]]
    on_device = all(t["device"].startswith(ctx.device) for t in times.values())
    return {"search_step": {"settings": ctx.settings.search, "darts": times["darts"], "cdarts": times["cdarts"],
                            "ratios": ratios},
            "checks": [{"name": f"both methods ran on {ctx.device}", "passed": on_device,
                        "detail": ", ".join(t["device"] for t in times.values())},
                       {"name": "finite positive step times and ratios",
                        "passed": all(math.isfinite(v) and v > 0 for v in values),
                        "detail": f"CDARTS/DARTS {ratios['step_with_stage1_ratio']:.2f}x with stage 1 "
                                  f"({ratios['measure']}); paper {ratios['paper']}"}]}


def train_section(ctx: Context) -> dict:
    bench = load_benchmark("train_throughput")
    with torch_threads(None):  # the benchmark sets the thread count; restored after
        result = bench.measure(device=ctx.device, **ctx.settings.train)
    values = [result["images_per_s_cdarts_train"], result["images_per_s_bare"], result["ratio"]]
    return {"train_throughput": result,
            "checks": [{"name": f"ran on {ctx.device}", "passed": result["device"].startswith(ctx.device),
                        "detail": result["device"]},
                       {"name": "finite positive throughput", "passed": all(math.isfinite(v) and v > 0 for v in values),
                        "detail": f"{result['images_per_s_cdarts_train']:.0f} images/s, "
                                  f"{result['ratio']:.3f} of the bare loop"}]}


def gemm_section(ctx: Context) -> dict:
    rates = {}
    with fp32_math(ctx.device, "fp32"):  # FP32 means FP32 arithmetic: TF32 off
        rates["fp32_tf32_off"] = measure_gemm_rate(sizes=ctx.settings.gemm_sizes, device=ctx.device,
                                                   runtimes=("torch",)).as_dict()
    if ctx.device.startswith("cuda"):
        rates["fp16"] = measure_gemm_rate(sizes=ctx.settings.gemm_sizes, device=ctx.device, dtype="float16",
                                          runtimes=("torch",)).as_dict()
    return {"gemm": rates, "checks": [{"name": "finite positive GEMM rates",
                                       "passed": all(math.isfinite(r["gflops"]) and r["gflops"] > 0
                                                     for r in rates.values()),
                                       "detail": ", ".join(f"{k} {r['gflops']:.0f} GFLOP/s"
                                                           for k, r in rates.items())}]}
