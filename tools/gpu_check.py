#!/usr/bin/env python
"""Check and time what an NVIDIA machine allows, in a few minutes, into one JSON and one Markdown report.

    python tools/gpu_check.py --out gpu_check.json
    python tools/gpu_check.py --models cdarts_cifar:32,cdarts_b:224 --batch 1,8,32 --iters 200

For one cell model and one chain model (``--models``; BatchNorm statistics calibrated so outputs
depend on the input, or the parity checks would prove nothing):

* ONNX export through the verified pipeline (CPU, FP32 parity at every batch), FP16 and INT8 Q/DQ
  ONNX files checked in ONNX Runtime on the CPU;
* TensorRT FP32 (TF32 off), FP16 and INT8 engines, each checked against PyTorch FP32 on the GPU
  (TF32 off) at every batch, and timed as trtexec reports: GPU compute time (plain and CUDA graph),
  host latency, enqueue time, pipelined throughput;
* PyTorch eager FP32/FP16, ``torch.compile`` FP32 and ONNX Runtime CUDA, timed at every batch;
* the GEMM ceiling (FP32 with TF32 off, FP16) and the conditions that change the numbers.

Every section records ``status`` (ok / skipped / failed) and why.  On a machine without CUDA or
TensorRT the CPU parts run and the report lists what was skipped and why; the exit status is 1
when a section failed (a parity check included), else 0.

The paper's reference point (CDARTS, CIFAR network, batch 32, 32x32, 41.2 ms on a P100) is copied
into the report as published, not measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

PRECISIONS = ("fp32", "fp16", "int8")


class Skip(Exception):
    """A section that cannot run on this machine (absent GPU, package or provider)."""


class Check:
    """The report under construction: one entry per section, each ok / skipped / failed with its reason."""

    def __init__(self, budget_s: float) -> None:
        self.deadline = time.monotonic() + budget_s
        self.sections: dict[str, dict] = {}

    def run(self, key: str, fn: Callable[[], Any]) -> Any:
        """Run one section; record its result, or why it was skipped or failed.  Returns the value or None."""
        if time.monotonic() > self.deadline:
            self.sections[key] = {"status": "skipped", "reason": "time budget spent (--budget-s)"}
            return None
        start = time.monotonic()
        value = None
        try:
            value = fn()
            entry = value if isinstance(value, dict) else {"value": value}
            failed = [r for r in entry.get("parity", []) if r.get("passed") is False]
            entry = {"status": "failed" if failed else "ok", **entry}
            if failed:
                entry["reason"] = f"{len(failed)} parity row(s) failed"
        except Skip as exc:
            entry = {"status": "skipped", "reason": str(exc)}
        except Exception as exc:  # record and carry on: one broken runtime must not hide the others
            entry = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc(limit=4)}
        entry["seconds"] = round(time.monotonic() - start, 2)
        self.sections[key] = entry
        print(f"[gpu_check] {key}: {entry['status']}{' - ' + entry['reason'] if 'reason' in entry else ''} "
              f"({entry['seconds']} s)", file=sys.stderr)
        return value

    def skip(self, key: str, reason: str) -> None:
        self.sections[key] = {"status": "skipped", "reason": reason, "seconds": 0.0}
        print(f"[gpu_check] {key}: skipped - {reason}", file=sys.stderr)


# --------------------------------------------------------------------------- the machine


def machine() -> dict:
    """What this machine has: CUDA, TensorRT, ONNX Runtime CUDA; and the conditions of the run."""
    import onnxruntime
    import torch

    from cdarts_deploy.deploy.versions import conditions

    cuda = torch.cuda.is_available()
    env: dict[str, Any] = {"cuda_available": cuda, "conditions": conditions(None, "cuda" if cuda else "cpu")}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gib=round(props.total_memory / 2**30, 1), sm_count=props.multi_processor_count,
                   torch_cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    env["cuda_reason"] = None if cuda else "no CUDA device visible to PyTorch"
    try:
        from cdarts_deploy.deploy.trt import require_tensorrt

        require_tensorrt()
        env["tensorrt_reason"] = None
    except Exception as exc:  # TensorRTUnavailable, or a broken install
        env["tensorrt_reason"] = str(exc)
    env["tensorrt_available"] = env["tensorrt_reason"] is None
    has_provider = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    env["onnxruntime_cuda_reason"] = (None if has_provider and cuda else
                                      "no CUDA device" if not cuda else
                                      "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    return env


# --------------------------------------------------------------------------- one model


def on_device(model, device: str):
    """``model`` moved to ``device``, wrapped to take host inputs: the parity reference on the GPU."""
    import torch

    class OnDevice(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model.to(device)

        def forward(self, x):
            p = next(self.inner.parameters())
            return self.inner(x.to(device=p.device, dtype=p.dtype))

    return OnDevice().eval()


def build_subject(zoo_name: str, hw: tuple[int, int], args: argparse.Namespace):
    """The model at ``hw`` with calibrated BatchNorm (random weights otherwise give input-independent logits)."""
    import copy

    from cdarts_deploy import genotype as gt
    from cdarts_deploy.deploy import model_spec as ms

    genotype = gt.load(zoo_name)
    is_cell = isinstance(genotype, gt.CellGenotype)
    spec = ms.resolve_spec(genotype, width=args.width if is_cell else None, cells=args.cells if is_cell else None,
                           num_classes=args.num_classes, input_size=hw)
    model = ms.build_model(genotype, spec)
    ms.calibrate_batchnorm(model, hw)
    return genotype, spec, model, copy.deepcopy(model)


def check_inputs(batches: Sequence[int], hw: tuple[int, int]) -> dict:
    from cdarts_deploy.deploy.model_spec import random_batch

    return {f"random b{b}": random_batch(b, hw, seed=100 + b) for b in batches}


def export_files(model, work: Path, name: str, hw, batches, args, calibration) -> dict:
    """FP32 ONNX through the verified pipeline (CPU parity at every batch), then the FP16 and INT8 files."""
    from cdarts_deploy.deploy import precision as pr
    from cdarts_deploy.deploy.pipeline import OnnxExport, export_verified

    result = export_verified(model, work, name, OnnxExport((1, 3, *hw), exporter=args.exporter),
                             check_inputs(batches, hw), {"name": name})
    if not result.passed:
        raise RuntimeError(result.failures[0])
    fp32 = work / f"{name}.onnx"
    fp16, int8, int8_qdq = work / f"{name}.fp16.onnx", work / f"{name}.int8.onnx", work / f"{name}.int8.qdq.onnx"
    pr.to_fp16(fp32, fp16)
    pr.quantize_int8(fp32, int8, calibration, target="onnxruntime")
    pr.quantize_int8(fp32, int8_qdq, calibration, target="tensorrt")  # explicit Q/DQ: TensorRT's INT8 route
    files = {"fp32": str(fp32), "fp16": str(fp16), "int8": str(int8), "int8_tensorrt": str(int8_qdq)}
    return {"files": files, "parity": result.report["parity"]}


def onnxruntime_parity(reference, path: Path, precision: str, device: str = "cpu",
                       labels: Sequence[str] | None = None) -> dict:
    from cdarts_deploy.deploy import ort
    from cdarts_deploy.deploy.parity import compare_runtime

    session = ort.session(path, None, device)
    rows = compare_runtime(reference, lambda b: ort.run(session, b), ort.output_names(session), precision,
                           f"onnxruntime-{device}", labels)
    return {"parity": rows}


def stats_entry(m) -> dict:
    return {"backend": m.backend, "device": m.device, "precision": m.precision, "timed_region": m.timed_region,
            "stats": m.stats.as_dict(), "details": m.details}


def check_model(check: Check, env: dict, zoo_name: str, hw: tuple[int, int], args: argparse.Namespace,
                batches: list[int], work: Path) -> None:
    from cdarts_deploy.deploy import parity
    from cdarts_deploy.deploy import profiling as prof
    from cdarts_deploy.deploy.model_spec import random_batch

    built: dict[str, Any] = {}

    def build() -> dict:
        _, spec, built["model"], built["cpu_model"] = build_subject(zoo_name, hw, args)
        return {"spec": spec.as_dict(), "kind": type(_).__name__}

    if check.run(f"{zoo_name}/build", build) is None:
        return
    model, cpu_model = built["model"], built["cpu_model"]  # the GPU reference's copy, and the one kept on the CPU
    cuda = env["cuda_available"]
    name = zoo_name
    if args.calib_dir:
        from cdarts_deploy.deploy.precision import load_images

        calibration = load_images(args.calib_dir, hw, limit=256)
        inputs = {**check_inputs(batches, hw), parity.IMAGES: calibration[:64]}
    else:  # no real images: INT8 is calibrated on random batches and its agreement is reported, not judged
        calibration = random_batch(32, hw, seed=7)
        inputs = check_inputs(batches, hw)
    files = check.run(f"{name}/onnx_export", lambda: export_files(cpu_model, work, name, hw, batches, args,
                                                                  calibration))
    cpu_reference = parity.TorchReference(cpu_model, inputs)
    for precision in ("fp16", "int8"):
        if files:
            check.run(f"{name}/onnxruntime_cpu_{precision}_parity",
                      lambda: onnxruntime_parity(cpu_reference, Path(files["files"][precision]), precision))

    gpu_reference = None
    if cuda:
        gpu_reference = parity.TorchReference(on_device(model, "cuda"), inputs)  # FP32, TF32 off (set in main)

    # TensorRT: one engine per precision, checked at every batch, then timed at every batch
    for precision in PRECISIONS:
        key = f"{name}/tensorrt_{precision}"
        if env["tensorrt_reason"]:
            check.skip(f"{key}/build_and_parity", env["tensorrt_reason"])
            continue
        if not files:
            check.skip(f"{key}/build_and_parity", "the ONNX export failed")
            continue
        engine = work / f"{name}.{precision}.engine"
        trt_file = "int8_tensorrt" if precision == "int8" else precision
        done = check.run(f"{key}/build_and_parity",
                         lambda: tensorrt_build_and_check(Path(files["files"][trt_file]), engine, hw, precision,
                                                          max(batches), gpu_reference))
        if done is None or not engine.exists():
            continue
        for batch in batches:
            for graph in (False, True):
                check.run(f"{key}/b{batch}/time{'_cuda_graph' if graph else ''}", lambda: stats_entry(
                    prof.measure_tensorrt(engine, (batch, 3, *hw), args.warmup, args.iters, precision,
                                          cuda_graph=graph)))

    # PyTorch and ONNX Runtime timing at every batch
    for batch in batches:
        shape = (batch, 3, *hw)
        device = "cuda" if cuda else "cpu"
        check.run(f"{name}/b{batch}/torch_eager_fp32_{device}", lambda: stats_entry(
            prof.measure_torch(cpu_model, shape, args.warmup, args.iters, device, "fp32")))
        if cuda:
            check.run(f"{name}/b{batch}/torch_eager_fp16_cuda", lambda: stats_entry(
                prof.measure_torch(cpu_model, shape, args.warmup, args.iters, "cuda", "fp16")))
            check.run(f"{name}/b{batch}/torch_compile_fp32_cuda", lambda: stats_entry(
                prof.measure_torch(cpu_model, shape, args.warmup, args.iters, "cuda", "fp32", compile=True)))
        else:
            for what in ("torch_eager_fp16_cuda", "torch_compile_fp32_cuda"):
                check.skip(f"{name}/b{batch}/{what}", env["cuda_reason"])
        if env["onnxruntime_cuda_reason"]:
            check.skip(f"{name}/b{batch}/onnxruntime_cuda_fp32", env["onnxruntime_cuda_reason"])
        elif files:
            def ort_cuda(shape=shape, batch=batch) -> dict:
                rows = onnxruntime_parity(gpu_reference, Path(files["files"]["fp32"]), "fp32", "cuda",
                                          [f"random b{batch}"])["parity"]
                m = prof.measure_onnxruntime(files["files"]["fp32"], shape, args.warmup, args.iters, None, "cuda")
                return {**stats_entry(m), "parity": rows}

            check.run(f"{name}/b{batch}/onnxruntime_cuda_fp32", ort_cuda)


def tensorrt_build_and_check(onnx_path: Path, engine: Path, hw, precision: str, max_batch: int, reference) -> dict:
    from cdarts_deploy.deploy.parity import compare_runtime
    from cdarts_deploy.deploy.trt import TensorRTRunner, build_engine

    info = build_engine(onnx_path, engine, hw, precision, min_batch=1, opt_batch=max_batch, max_batch=max_batch)
    runner = TensorRTRunner(engine)
    rows = compare_runtime(reference, runner.run, runner.output_names, precision, "tensorrt")
    return {"engine": info.as_dict(), "parity": rows}


def gemm(check: Check, env: dict, when: str) -> None:
    """The GEMM ceiling, measured ``before`` and ``after`` the models in this process."""
    from cdarts_deploy.deploy.gemm import measure_gemm_rate

    if env["cuda_available"]:
        check.run(f"gemm/{when}/cuda_fp32_tf32_off", lambda: measure_gemm_rate(sizes=(4096, 8192),
                                                                               device="cuda").as_dict())
        check.run(f"gemm/{when}/cuda_fp16", lambda: measure_gemm_rate(sizes=(4096, 8192), device="cuda",
                                                                      dtype="float16").as_dict())
    else:
        check.skip(f"gemm/{when}/cuda_fp32_tf32_off", env["cuda_reason"])
        check.run(f"gemm/{when}/cpu_fp32", lambda: measure_gemm_rate(sizes=(256, 512), repeats=5).as_dict())


# --------------------------------------------------------------------------- the report


def summary(sections: dict) -> dict:
    status = {k: v["status"] for k, v in sections.items()}
    return {
        "ok": sum(s == "ok" for s in status.values()),
        "skipped": {k: sections[k]["reason"] for k, s in status.items() if s == "skipped"},
        "failed": {k: sections[k]["reason"] for k, s in status.items() if s == "failed"},
    }


def _pct(stats: dict, key: str) -> str:
    name = key.removesuffix("_ms")
    if name in stats.get("unsupported_percentiles", []):
        return f"- (n={stats['iters']})"
    return f"{stats[key]:.3f} (n={stats.get(name + '_samples', stats['iters'])})"


def markdown(report: dict) -> str:
    env = report["sections"].get("machine", {})
    s = report["summary"]
    lines = ["# GPU check", "",
             f"GPU: {env.get('gpu') or 'none'}; CUDA: {'yes' if env.get('cuda_available') else 'no'}; "
             f"TensorRT: {'yes' if env.get('tensorrt_available') else 'no'}.",
             f"Sections: {s['ok']} ok, {len(s['skipped'])} skipped, {len(s['failed'])} failed.", ""]
    if not env.get("cuda_available"):
        lines += [f"**CUDA was not available ({env.get('cuda_reason')}): no GPU figure in this report.**", ""]
    if not env.get("tensorrt_available"):
        lines += [f"**TensorRT was not available: {env.get('tensorrt_reason')}**", ""]
    if s["failed"]:
        lines += ["## Failed", ""] + [f"- {k}: {v}" for k, v in s["failed"].items()] + [""]
    if s["skipped"]:
        lines += ["## Skipped", ""] + [f"- {k}: {v}" for k, v in s["skipped"].items()] + [""]
    lines += ["## Parity (against PyTorch FP32; TF32 off on the GPU)", "",
              "| section | runtime | precision | input | batch | depends on input | max abs | top-1 | passed |",
              "|---|---|---|---|---:|---|---:|---:|---|"]
    for key, sec in report["sections"].items():
        for r in sec.get("parity", []) if isinstance(sec.get("parity"), list) else []:
            lines.append(f"| {key} | {r.get('runtime')} | {r.get('precision')} | {r.get('input')} | {r.get('batch')} "
                         f"| {r.get('input_dependent')} | {r['max_abs']:.3g} | - | {r.get('passed')} |"
                         if "max_abs" in r else
                         f"| {key} | {r.get('runtime')} | {r.get('precision')} | {r.get('input')} | {r.get('batch')} "
                         f"| {r.get('input_dependent')} | - | {r['top1_agreement']:.0%} | {r.get('passed')} |")
    lines += ["", "## Latency (ms; each percentile with its sample size n, '-' where n is too small)", "",
              "| section | backend | device | precision | batch | mean | median | p90 | p95 | p99 | img/s |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    trt_rows = []
    for key, sec in report["sections"].items():
        st = sec.get("stats")
        if sec.get("status") != "ok" or not isinstance(st, dict):
            continue
        throughput = sec.get("details", {}).get("throughput_ips_pipelined", st["throughput_ips"])
        lines.append(f"| {key} | {sec['backend']} | {sec['device']} | {sec['precision']} | {st['batch']} "
                     f"| {st['mean_ms']:.3f} | {st['median_ms']:.3f} | {_pct(st, 'p90_ms')} | {_pct(st, 'p95_ms')} "
                     f"| {_pct(st, 'p99_ms')} | {throughput:.1f} |")
        if sec["backend"] == "tensorrt":
            trt_rows.append((key, sec["details"]))
    if trt_rows:
        lines += ["", "## TensorRT as trtexec reports it (median / p99 ms; throughput pipelined)", "",
                  "| section | CUDA graph | GPU compute | host latency | enqueue | img/s |", "|---|---|---|---|---|---:|"]
        for key, d in trt_rows:
            cells = " | ".join(f"{d[k]['median_ms']:.3f} / {_pct(d[k], 'p99_ms')}"
                               for k in ("gpu_compute", "host_latency", "enqueue"))
            lines.append(f"| {key} | {d['cuda_graph']} | {cells} | {d['throughput_ips_pipelined']:.1f} |")
    pub = report["published_reference"]
    lines += ["", f"Published reference (not measured): {pub['model']}, {pub['latency_ms']} ms at batch {pub['batch']}, "
              f"{pub['input']}, {pub['device']} ({pub['source']}).", ""]
    return "\n".join(lines)


def write(report: dict, out: str) -> list[Path]:
    from cdarts_deploy.atomic_files import write_text

    json_path = Path(out)
    md_path = json_path.with_suffix(".md")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_text(json_path, json.dumps(report, indent=2, default=str) + "\n")
    write_text(md_path, markdown(report))
    print(f"[gpu_check] wrote {json_path} and {md_path}", file=sys.stderr)
    return [json_path, md_path]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu_check.json", help="JSON report (the Markdown goes beside it as .md)")
    p.add_argument("--models", default="cdarts_cifar:32,cdarts_b:224",
                   help="comma list of zoo_name:input_size, one cell and one chain model (default "
                   "cdarts_cifar:32,cdarts_b:224)")
    p.add_argument("--batch", default="1,8,32", help="batch sizes (default 1,8,32)")
    p.add_argument("--width", type=int, help="cell models: initial channels (default: the layout's)")
    p.add_argument("--cells", type=int, help="cell models: number of cells (default: the layout's)")
    p.add_argument("--num-classes", type=int, help="classifier outputs (default: the genotype's)")
    p.add_argument("--warmup", type=int, default=20, help="untimed runs first (default 20)")
    p.add_argument("--iters", type=int, default=200, help="timed runs (default 200: p99 needs at least 100)")
    p.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo", help="ONNX exporter")
    p.add_argument("--calib-dir", help="real images for INT8 calibration and its top-1 check (default: random "
                   "batches, INT8 agreement reported only)")
    p.add_argument("--budget-s", type=float, default=480, help="stop starting new sections after this (default 480)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    batches = sorted({int(b) for b in args.batch.split(",") if b.strip()})
    check = Check(args.budget_s)
    report: dict[str, Any] = {
        "format": "cdarts-gpu-check",
        "version": 2,
        "published_reference": {"model": "CDARTS (CIFAR network)", "latency_ms": 41.2, "batch": 32, "input": "32x32",
                                "device": "NVIDIA Tesla P100", "source": "CDARTS paper Table 4 (published, not measured)"},
        "sections": check.sections,
    }
    env = check.run("machine", machine) or {"cuda_available": False, "cuda_reason": "machine probe failed",
                                            "tensorrt_reason": "machine probe failed",
                                            "onnxruntime_cuda_reason": "machine probe failed"}
    if env["cuda_available"]:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 arithmetic in every reference and timing
        torch.backends.cudnn.allow_tf32 = False
    gemm(check, env, "before")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for entry in args.models.split(","):
            zoo_name, size = entry.split(":")
            check_model(check, env, zoo_name, (int(size), int(size)), args, batches, Path(tmp))
    gemm(check, env, "after")
    report["summary"] = summary(check.sections)
    write(report, args.out)
    return 1 if report["summary"]["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
