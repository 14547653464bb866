"""The latency sections: eager, CUDA-graph replay and torch.compile latency of every latency network at every
batch; replays and compiled runs must agree with eager."""

from __future__ import annotations

import copy
import functools
import math
import time
from typing import Any, Callable

import torch

from cdarts_deploy.deploy.profiling import fp32_math
from cdarts_deploy.deploy.timing import summarize, time_cuda, time_host

from .context import Context
from .settings import Settings

#: A CUDA-graph replay runs the eager kernels: it must match eager to FP32 summation order.  A compiled
#: model fuses and reorders: it must stay within 1% of the logits' scale (well above a random 20-cell network's
#: own FP32-vs-FP64 error: docs/results/reduced_precision_logit_error.md); at FP16 / BF16 the compiled agreement
#: is reported, not judged.  These are consistency checks; parity is the parity section's job.
GRAPH_RTOL, COMPILE_RTOL, CONSISTENCY_ATOL = 1e-3, 1e-2, 1e-4


def _dtype(name: str) -> Any:
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def _timer(device: str) -> Callable[[Callable[[], Any], int, int], list[float]]:
    if device.startswith("cuda"):
        return lambda step, warmup, iters: time_cuda(step, warmup, iters)
    return lambda step, warmup, iters: time_host(step, warmup, iters)


def agreement(reference: Any, candidate: Any, rtol: float) -> dict:
    """Largest |candidate - reference| against ``CONSISTENCY_ATOL + rtol * max|reference|``."""
    ref, cand = reference.float(), candidate.float()
    max_abs = float((cand - ref).abs().max())
    scale = float(ref.abs().max())
    return {"max_abs": max_abs, "scale": scale, "allowed": CONSISTENCY_ATOL + rtol * scale,
            "passed": bool(max_abs <= CONSISTENCY_ATOL + rtol * scale)}


def conditions_row(settings: Settings) -> dict:
    """What changes a latency row, read inside the timed block (so TF32 shows as the row ran)."""
    return {"dtype": settings.dtype, "warmup": settings.warmup, "iters": settings.iters,
            "cudnn_benchmark": torch.backends.cudnn.benchmark, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32, "memory_format": "contiguous"}


def latency_section(ctx: Context, mode: str) -> dict:
    """Eager, CUDA-graph replay or torch.compile latency of every latency network at every batch."""
    s, device = ctx.settings, ctx.device
    nets = s.latency_nets if mode != "compile" else [n for n in s.latency_nets if n.name in s.compile_nets]
    batches = s.latency_batches if mode != "compile" else s.compile_batches
    timer = _timer(device)
    rows: list[dict] = []
    problems: list[str] = []
    total = len(nets) * len(batches)
    for spec in nets:
        model = copy.deepcopy(ctx.net(spec)).to(device=device, dtype=_dtype(s.dtype)).eval()
        # one compiled object per model: batch 1 compiles a static graph, batch 8 one dynamic-batch graph
        # that batch 32 reuses (torch's automatic dynamic shapes)
        compiled = torch.compile(model) if mode == "compile" else None
        for batch in batches:
            ctx.check_budget(f"{len(rows)} of {total} rows measured")
            x = torch.randn(batch, 3, spec.size, spec.size, device=device, dtype=_dtype(s.dtype))
            row: dict[str, Any] = {"model": spec.label(), "mode": mode, "batch": batch, "device": device}
            with fp32_math(device, s.dtype), torch.no_grad():
                row.update(conditions_row(s))
                eager_out = model(x).clone()
                if mode == "eager":
                    step = functools.partial(model, x)  # bound now: x and model are deleted after the row
                elif mode == "cuda_graph":
                    step, graph_out = capture_graph(model, x)
                    step()
                    torch.cuda.synchronize()
                    row["agrees_with_eager"] = agreement(eager_out, graph_out, GRAPH_RTOL)
                else:
                    start = time.perf_counter()
                    out = compiled(x)  # compiles here, untimed
                    if device.startswith("cuda"):
                        torch.cuda.synchronize()
                    row["compile_s"] = round(time.perf_counter() - start, 2)
                    row["agrees_with_eager"] = agreement(eager_out, out, COMPILE_RTOL)
                    if s.dtype != "fp32":  # half-precision rounding, reordered and amplified, is not a bug: report only
                        row["agrees_with_eager"]["passed"] = None
                    step = functools.partial(compiled, x)
                warmup = s.warmup if mode != "compile" else max(s.warmup, 3)
                times = timer(step, warmup, s.iters)
            row["stats"] = summarize(times, batch, warmup).as_dict()
            row["timed_region"] = ("forward only, input resident on the device; "
                                   + ("CUDA events" if device.startswith("cuda") else "perf_counter"))
            if not all(math.isfinite(t) and t > 0 for t in times):
                problems.append(f"{spec.label()} b{batch}: non-positive or non-finite time")
            if row.get("agrees_with_eager", {}).get("passed") is False:
                a = row["agrees_with_eager"]
                problems.append(f"{spec.label()} b{batch}: differs from eager by {a['max_abs']:.3g} "
                                f"(allowed {a['allowed']:.3g})")
            rows.append(row)
            del x
        del model, compiled
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    checks = [{"name": f"all {total} rows measured", "passed": len(rows) == total and total > 0,
               "detail": f"{len(rows)} of {total}"},
              {"name": "finite latencies" + ("" if mode == "eager" else ", outputs agree with eager"),
               "passed": not problems, "detail": "; ".join(problems[:4]) or "all rows"}]
    if mode == "compile":
        torch._dynamo.reset()  # release the compiled graphs before the next section
    return {"latency": rows, "checks": checks}


def capture_graph(model: Any, x: Any) -> tuple[Callable[[], Any], Any]:
    """Capture one forward pass of ``model`` on the static input ``x`` in a CUDA graph; (replay, output)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as capture requires
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = model(x)
    return graph.replay, out
