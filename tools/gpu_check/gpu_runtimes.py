"""The sections of runtimes only a GPU machine may have: TensorRT engines and ONNX Runtime's CUDA provider,
each checked against PyTorch FP32 on the GPU and timed."""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import torch

from cdarts_deploy.deploy import ort, parity, rules, trt_compare
from cdarts_deploy.deploy import precision as pr
from cdarts_deploy.deploy import profiling as prof
from cdarts_deploy.deploy.model_spec import random_batch
from cdarts_deploy.deploy.parity import compare_runtime
from cdarts_deploy.deploy.pipeline import OnnxExport, export_verified
from cdarts_deploy.deploy.profiling import fp32_math
from cdarts_deploy.deploy.trt import build_engine
from cdarts_deploy.deploy.trt_runner import EngineRunner

from .context import Context
from .settings import Net


def exported(ctx: Context, spec: Net, batches: Sequence[int]) -> dict:
    """FP32 ONNX of ``spec`` through the verified pipeline (CPU parity at every batch), FP16 and TensorRT INT8
    (Q/DQ) files beside it; made once per network for the sections that need a file."""
    if spec in ctx.onnx:
        return ctx.onnx[spec]
    hw = (spec.size, spec.size)
    name = spec.name
    inputs = {f"random b{b}": random_batch(b, hw, seed=100 + b) for b in batches}
    result = export_verified(ctx.net(spec), ctx.work, name, OnnxExport((1, 3, *hw), exporter="torchscript"), inputs,
                             {"name": name})
    if not result.passed:
        raise RuntimeError(result.failures[0])
    fp32 = ctx.work / f"{name}.onnx"
    files = {"fp32": fp32, "fp16": ctx.work / f"{name}.fp16.onnx", "int8": ctx.work / f"{name}.int8.qdq.onnx"}
    pr.to_fp16(fp32, files["fp16"])
    pr.quantize_int8(fp32, files["int8"], random_batch(32, hw, seed=7), target="tensorrt")  # explicit Q/DQ
    ctx.onnx[spec] = {"files": files, "inputs": inputs}
    return ctx.onnx[spec]


def gpu_reference(ctx: Context, spec: Net, inputs: Mapping[str, Any]) -> Any:
    """PyTorch FP32 on the GPU (TF32 off) as the reference of GPU runtimes: host batches in, host outputs out."""
    class OnDevice(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            p = next(self.inner.parameters())
            with fp32_math(ctx.device, "fp32"):
                return self.inner(x.to(device=p.device, dtype=p.dtype))

    return parity.TorchReference(OnDevice(copy.deepcopy(ctx.net(spec)).to(ctx.device)).eval(), inputs)


def tensorrt_section(ctx: Context) -> dict:
    s = ctx.settings
    rows, timings, bad, layer_rows = [], [], [], []
    for spec in s.trt_nets:
        made = exported(ctx, spec, s.parity_batches)
        reference = gpu_reference(ctx, spec, made["inputs"])
        for precision in ("fp32", "fp16", "int8"):
            ctx.check_budget(f"{spec.label()} {precision}")
            engine = ctx.work / f"{spec.name}.{precision}.engine"
            # one profile per timed batch (tactics chosen for each); the check refuses an engine whose layers do
            # not run in the precision asked for
            info = build_engine(made["files"][precision], engine, (spec.size, spec.size), precision,
                                batches=s.latency_batches)
            layer_rows.append({"model": spec.label(), "precision": precision, **(info.precision_check or {}),
                               "layer_precisions": info.layer_precisions})
            runner = EngineRunner(engine)  # Polygraphy's TrtRunner
            same_file: dict = {}
            if precision == "int8":  # element-wise against ONNX Runtime CPU on the same Q/DQ file: every input judged
                cpu = ort.session(made["files"]["int8"])
                same_file = {"int8_reference": lambda b, s=cpu: ort.run(s, b),
                             "int8_steps": rules.output_steps(made["files"]["int8"])}
            found = compare_runtime(reference, runner.run, runner.output_names, precision, "tensorrt", **same_file)
            runner.close()
            if any(r["passed"] is False for r in found):
                layer_rows[-1]["first_divergent_tensor"] = first_divergent_tensor(made["files"][precision],
                                                                                  made["inputs"], precision)
            rows += [{"model": spec.label(), **r} for r in found]
            bad += [r for r in found if r["passed"] is False]
            for batch in s.latency_batches:
                for graph in (False, True):
                    m = prof.measure_tensorrt(engine, (batch, 3, spec.size, spec.size), s.warmup, s.iters, precision,
                                              cuda_graph=graph)
                    timings.append({"model": spec.label(), "precision": precision, "batch": batch, "cuda_graph": graph,
                                    "stats": m.stats.as_dict(), "details": m.details})
    return {"parity": rows, "tensorrt_latency": timings, "tensorrt_layer_precisions": layer_rows,
            "checks": [{"name": "every engine within its precision's tolerance", "passed": not bad and bool(rows),
                        "detail": f"{len(bad)} of {len(rows)} rows failed"},
                       {"name": "every engine's convolutions run in the precision asked for",
                        "passed": bool(layer_rows) and all(r.get("passed") for r in layer_rows),
                        "detail": "; ".join(f"{r['model']} {r['precision']}: {r.get('in_asked_precision')}/"
                                            f"{r.get('compute_layers')}" for r in layer_rows)}]}


def first_divergent_tensor(onnx_path: Any, inputs: Mapping[str, Any], precision: str) -> dict:
    """Where a failing engine starts to go wrong: every tensor of the engine built with all outputs marked
    (Polygraphy) against ONNX Runtime on the same file, first one outside the tolerance (a diagnosis only)."""
    batch = next(iter(inputs.values()))
    try:
        found = trt_compare.compare_all_tensors(onnx_path, trt_compare.tensorrt_runner(onnx_path, "tensorrt",
                                                                                       mark_all=True),
                                                batch, precision, "tensorrt")
    except Exception as exc:  # noqa: BLE001 -- the diagnosis must not hide the parity failure it explains
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"tensors_compared": len(found.rows), "first": found.first_divergence}


def onnxruntime_cuda_section(ctx: Context) -> dict:
    s = ctx.settings
    rows, timings, tf32 = [], [], []
    for spec in s.trt_nets:
        made = exported(ctx, spec, s.parity_batches)
        session = ort.session(made["files"]["fp32"], None, "cuda")
        tf32.append(ort.tf32_enabled(session))  # the provider's own report of the option we passed
        found = compare_runtime(gpu_reference(ctx, spec, made["inputs"]), lambda b: ort.run(session, b),
                                ort.output_names(session), "fp32", "onnxruntime-cuda")
        rows += [{"model": spec.label(), **r} for r in found]
        for batch in s.latency_batches:
            ctx.check_budget(f"{spec.label()} b{batch}")
            m = prof.measure_onnxruntime(made["files"]["fp32"], (batch, 3, spec.size, spec.size), s.warmup, s.iters,
                                         None, "cuda")
            timings.append({"model": spec.label(), "batch": batch, "stats": m.stats.as_dict()})
    bad = [r for r in rows if r["passed"] is False]
    return {"parity": rows, "onnxruntime_cuda_latency": timings,
            "checks": [{"name": "ONNX Runtime CUDA within the fp32 tolerance", "passed": not bad and bool(rows),
                        "detail": f"{len(bad)} of {len(rows)} rows failed"},
                       {"name": "ONNX Runtime CUDA sessions run float32 without TF32",
                        "passed": bool(tf32) and all(t is False for t in tf32),
                        "detail": f"use_tf32 reported: {tf32}"}]}
