#!/usr/bin/env python
"""Measure what an NVIDIA machine allows, in a few minutes, into one JSON file.

    python tools/gpu_check.py --out gpu_check.json
    python tools/gpu_check.py --models cdarts_cifar:32,cdarts_b:224 --batch 1,32 --iters 100

Each section runs on its own and records ``status`` (ok / skipped / failed)
with the reason, so a machine without onnxruntime-gpu or TensorRT still yields
a useful file:

* ``environment``: GPU, driver, CUDA and library versions;
* ``gemm``: measured matrix-multiply rate (fp32, tf32 off; fp16);
* per model and batch: PyTorch CUDA eager fp32 and fp16, CUDA graphs (fp32),
  ONNX Runtime CUDA (if the provider is present), TensorRT fp32 and fp16
  engines (if ``tensorrt`` imports), each with latency percentiles and, for
  exported runtimes, output parity against PyTorch.

The paper's reference point (CDARTS, CIFAR network, batch 32, 32x32, 41.2 ms on a
P100) is copied into the file as published, not measured.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def section(results: dict, key: str, fn: Callable[[], Any], deadline: float) -> None:
    """Run one measurement; record its result, or why it was skipped or failed."""
    if time.monotonic() > deadline:
        results[key] = {"status": "skipped", "reason": "time budget spent (--budget-s)"}
        return
    start = time.monotonic()
    try:
        value = fn()
        results[key] = {"status": "ok", **(value if isinstance(value, dict) else {"value": value})}
    except Skip as exc:
        results[key] = {"status": "skipped", "reason": str(exc)}
    except Exception as exc:  # record and carry on: one broken runtime must not hide the others
        results[key] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(limit=4)}
    results[key]["seconds"] = round(time.monotonic() - start, 2)
    print(f"[gpu_check] {key}: {results[key]['status']} ({results[key]['seconds']} s)", file=sys.stderr)


class Skip(Exception):
    """A section that cannot run on this machine (absent package or provider)."""


def environment() -> dict:
    import torch

    from cdarts_deploy.deploy.versions import cpu_model, library_versions

    env: dict[str, Any] = {"cpu": cpu_model(), "versions": library_versions(),
                           "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gib=round(props.total_memory / 2**30, 1), sm_count=props.multi_processor_count,
                   torch_cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    if shutil.which("nvidia-smi"):
        query = "name,driver_version,clocks.max.sm,power.limit"
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        env["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
    return env


def stats_dict(m) -> dict:
    return {"backend": m.backend, "precision": m.precision, "timed_region": m.timed_region, **m.stats.as_dict()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu_check.json", help="JSON result file (default gpu_check.json)")
    p.add_argument("--models", default="cdarts_cifar:32,cdarts_b:224",
                   help="comma list of zoo_name:input_size (default cdarts_cifar:32,cdarts_b:224)")
    p.add_argument("--batch", default="1,32", help="batch sizes (default 1,32)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--budget-s", type=float, default=360, help="stop starting new sections after this (default 360)")
    args = p.parse_args()
    deadline = time.monotonic() + args.budget_s
    batches = [int(b) for b in args.batch.split(",")]
    results: dict[str, Any] = {
        "format": "cdarts-gpu-check",
        "version": 1,
        "published_reference": {"model": "CDARTS (CIFAR network)", "latency_ms": 41.2, "batch": 32, "input": "32x32",
                                "device": "NVIDIA Tesla P100", "source": "CDARTS paper Table 4 (published, not measured)"},
    }
    section(results, "environment", environment, deadline)

    import torch

    if not torch.cuda.is_available():
        results["cuda"] = {"status": "skipped", "reason": "no CUDA device visible to PyTorch"}
        return write(results, args.out)

    from cdarts_deploy import genotype as gt
    from cdarts_deploy.deploy import model_spec as ms
    from cdarts_deploy.deploy import ort as ort_factory
    from cdarts_deploy.deploy import profiling as prof
    from cdarts_deploy.deploy.gemm import measure_gemm_rate
    from cdarts_deploy.deploy.parity import TorchReference, compare_runtime

    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 numbers mean fp32 arithmetic
    torch.backends.cudnn.allow_tf32 = False
    section(results, "gemm_fp32", lambda: measure_gemm_rate(sizes=(4096, 8192), device="cuda").as_dict(), deadline)
    section(results, "gemm_fp16", lambda: measure_gemm_rate(sizes=(4096, 8192), device="cuda",
                                                            dtype="float16").as_dict(), deadline)

    import onnxruntime as ort

    has_ort_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    try:
        from cdarts_deploy.deploy.trt import require_tensorrt

        require_tensorrt()
        trt_reason = None
    except Exception as exc:
        trt_reason = str(exc)

    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        for entry in args.models.split(","):
            zoo_name, size = entry.split(":")
            hw = (int(size), int(size))
            genotype = gt.load(zoo_name)
            spec = ms.resolve_spec(genotype, input_size=hw)
            model = ms.build_model(genotype, spec)
            ms.calibrate_batchnorm(model, hw)
            reference_model = copy.deepcopy(model)  # stays float32 on the CPU while the timed copy moves around
            onnx_path = work / f"{zoo_name}.onnx"
            section(results, f"{zoo_name}/export_onnx", lambda: export_checked(reference_model, work, zoo_name, hw),
                    deadline)
            for batch in batches:
                key = f"{zoo_name}/b{batch}"
                shape = (batch, 3, *hw)
                x = ms.random_batch(batch, hw, seed=batch)
                ref = TorchReference(reference_model, {f"random b{batch}": x})

                section(results, f"{key}/torch_eager_fp32", lambda: stats_dict(
                    prof.measure_torch(model, shape, args.warmup, args.iters, "cuda", "fp32")), deadline)
                section(results, f"{key}/torch_eager_fp16", lambda: stats_dict(
                    prof.measure_torch(model, shape, args.warmup, args.iters, "cuda", "fp16")), deadline)
                section(results, f"{key}/torch_cuda_graph_fp32",
                        lambda: cuda_graph(model, shape, args.warmup, args.iters), deadline)

                def ort_cuda() -> dict:
                    if not has_ort_cuda:
                        raise Skip("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
                    if not onnx_path.exists():
                        raise Skip("ONNX export failed")
                    session = ort_factory.session(onnx_path, None, "cuda")
                    parity = compare_runtime(ref, lambda b: ort_factory.run(session, b),
                                             ort_factory.output_names(session), "fp32")
                    m = prof.measure_onnxruntime(onnx_path, shape, args.warmup, args.iters, None, "cuda")
                    return {**stats_dict(m), "parity": parity}

                section(results, f"{key}/onnxruntime_cuda_fp32", ort_cuda, deadline)
                for precision in ("fp32", "fp16"):
                    section(results, f"{key}/tensorrt_{precision}",
                            lambda: tensorrt_run(onnx_path, work, zoo_name, precision, hw, batches, shape, x, ref,
                                                 args, trt_reason),
                            deadline)
            model.cpu()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return write(results, args.out)


def export_checked(model, work: Path, name: str, hw) -> dict:
    """The ONNX file every runtime below uses, exported and checked on the CPU like cdarts-export does."""
    from cdarts_deploy.deploy.model_spec import random_batch
    from cdarts_deploy.deploy.pipeline import OnnxExport, export_verified

    result = export_verified(model, work, name, OnnxExport((1, 3, *hw)),
                             {"random b1": random_batch(1, hw)}, {"name": name})
    if not result.passed:
        (work / f"{name}.onnx").unlink(missing_ok=True)
        raise RuntimeError(result.failures[0])
    return {"path": str(work / f"{name}.onnx"), "parity": result.report["parity"]}


def cuda_graph(model, shape, warmup: int, iters: int) -> dict:
    """Capture one forward pass in a CUDA graph and time its replay (no host work inside)."""
    import torch

    from cdarts_deploy.deploy import timing

    model = model.to("cuda", torch.float32).eval()
    static_x = torch.randn(*shape, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(stream):
        for _ in range(3):  # warm-up on a side stream before capture, as CUDA graphs require
            model(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        model(static_x)
    times = timing.time_cuda(graph.replay, warmup, iters)
    stats = timing.summarize(times, shape[0], warmup)
    return {"backend": "torch-cuda-graph", "precision": "fp32",
            "timed_region": "graph.replay only, input and outputs resident on the GPU (CUDA events)", **stats.as_dict()}


def tensorrt_run(onnx_path, work, name, precision, hw, batches, shape, x, ref, args, trt_reason) -> dict:
    from cdarts_deploy.deploy import profiling as prof
    from cdarts_deploy.deploy.parity import compare_runtime
    from cdarts_deploy.deploy.precision import to_fp16
    from cdarts_deploy.deploy.trt import TensorRTRunner, build_engine

    if trt_reason:
        raise Skip(trt_reason)
    if not onnx_path.exists():
        raise Skip("ONNX export failed")
    engine = work / f"{name}.{precision}.engine"
    if not engine.exists():
        src = onnx_path
        if precision == "fp16":
            src = work / f"{name}.fp16.onnx"
            to_fp16(onnx_path, src)
        build_engine(src, engine, hw, precision, min_batch=1, opt_batch=max(batches), max_batch=max(batches))
    runner = TensorRTRunner(engine)
    parity = compare_runtime(ref, runner.run, runner.output_names, precision, "tensorrt")
    m = prof.measure_tensorrt(engine, shape, args.warmup, args.iters, precision)
    return {**stats_dict(m), "parity": parity}


def write(results: dict, out: str) -> int:
    from cdarts_deploy.atomic_files import atomic_path

    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"[gpu_check] wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
