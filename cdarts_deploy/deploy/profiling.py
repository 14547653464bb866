"""Latency of one model on one backend: PyTorch eager or compiled, ONNX Runtime, TensorRT.

Each backend prepares a step function for one batch, times it with :mod:`cdarts_deploy.deploy.timing`
and says what the timed region holds (``timed_region``): the input batch is prepared before it.

* PyTorch times a private copy of the model (moving the caller's model to CUDA or FP16 would change
  what the next backend exports); FP32 on CUDA runs with TF32 off (``allow_tf32 = False`` for
  matmul and cuDNN), so "fp32" means FP32 arithmetic on every runtime;
* ``torch.compile`` compiles once per input shape (``dynamic=False``) in an untimed first call, then
  warms up (at least :data:`COMPILE_MIN_WARMUP` runs) before timing;
* TensorRT is reported as trtexec does: GPU compute time (events around the execution only,
  optionally a CUDA graph replay), host latency (input copy, execution, output copy), enqueue time
  (host time of the launch call) and a pipelined throughput (back-to-back launches), in ``details``.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from cdarts_deploy.deploy import ort
from cdarts_deploy.deploy.timing import LatencyStats, summarize, time_cuda, time_events, time_host
from cdarts_deploy.deploy.trt_runner import TensorRTRunner
from cdarts_deploy.errors import UserError

BACKENDS = ("torch", "torch-compile", "onnxruntime", "tensorrt")

#: torch.compile is never timed cold: at least this many warm-up runs follow the compiling call.
COMPILE_MIN_WARMUP = 3


class ProfileError(UserError):
    """Bad profiling input: reported as one line, exit status 2."""


@dataclass
class Measurement:
    backend: str
    device: str
    precision: str
    timed_region: str
    stats: LatencyStats
    details: dict = field(default_factory=dict)


@contextlib.contextmanager
def fp32_math(device: str, precision: str) -> Iterator[dict]:
    """Within the block, CUDA FP32 matmuls and convolutions use full FP32 (TF32 off); restored after."""
    settings = {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
                "cudnn_benchmark": torch.backends.cudnn.benchmark}
    if not (device.startswith("cuda") and precision == "fp32"):
        yield settings
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield {**settings, "tf32_matmul": False, "tf32_cudnn": False}
    finally:
        torch.backends.cuda.matmul.allow_tf32 = settings["tf32_matmul"]
        torch.backends.cudnn.allow_tf32 = settings["tf32_cudnn"]


def measure_torch(
    model,
    input_shape: tuple[int, ...],
    warmup: int,
    iters: int,
    device: str = "cpu",
    precision: str = "fp32",
    compile: bool = False,
    desc: str | None = None,
) -> Measurement:
    """PyTorch eager (or ``torch.compile``) latency of ``model`` on one batch of ``input_shape``."""
    if precision not in ("fp32", "fp16"):
        raise ProfileError(f"precision {precision!r} is not available for PyTorch; use fp32 or fp16")
    if precision == "fp16" and not device.startswith("cuda"):
        raise ProfileError("fp16 PyTorch timing needs a CUDA device; use --precision fp32 on the CPU")
    dtype = torch.float16 if precision == "fp16" else torch.float32
    # a private copy: the caller's model stays where it was for the backends that follow (ONNX export)
    model = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    x = torch.randn(*input_shape, device=device, dtype=dtype)
    name = "torch-compile" if compile else "torch"
    details: dict[str, Any] = {}
    with fp32_math(device, precision) as math:
        details["math"] = math
        runner = model
        if compile:
            runner = torch.compile(model, dynamic=False)  # one graph for this one shape
            start = time.perf_counter()
            with torch.inference_mode():
                runner(x)  # compiles here, untimed
            details.update(compile_s=time.perf_counter() - start, dynamic_shapes=False)
            warmup = max(warmup, COMPILE_MIN_WARMUP)

        def step() -> None:
            with torch.inference_mode():
                runner(x)

        if device.startswith("cuda"):
            times = time_cuda(step, warmup, iters, desc=desc)
            region = "forward only: input resident on the GPU before timing, outputs left on the GPU (CUDA events)"
        else:
            times = time_host(step, warmup, iters, desc=desc)
            region = "forward only: input tensor created before timing, outputs not copied (perf_counter)"
    if device.startswith("cuda") and precision == "fp32":
        region += "; TF32 off (matmul and cuDNN)"
    if compile:
        region += (f"; compiled once for this shape (dynamic=False) in an untimed call of "
                   f"{details['compile_s']:.1f} s, then {warmup} warm-up runs")
    return Measurement(name, device, precision, region, summarize(times, input_shape[0], warmup), details)


def measure_onnxruntime(
    onnx_path: str | os.PathLike,
    input_shape: tuple[int, ...],
    warmup: int,
    iters: int,
    threads: int | None,
    device: str = "cpu",
    precision: str = "fp32",
    desc: str | None = None,
) -> Measurement:
    """ONNX Runtime latency of one batch; inputs are float32 (FP16 files keep float32 inputs)."""
    session = ort.session(onnx_path, threads, device)
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
    feed = {name: x}
    times = time_host(lambda: session.run(None, feed), warmup, iters, desc=desc)
    if device.startswith("cuda"):
        region = "session.run: host-to-device copy of the input and device-to-host copy of outputs included"
    else:
        region = "session.run on a host batch made before timing; allocation of the output arrays included"
    return Measurement("onnxruntime", device, precision, region + " (perf_counter)",
                       summarize(times, input_shape[0], warmup))


def measure_tensorrt(
    engine_path: str | os.PathLike,
    input_shape: tuple[int, ...],
    warmup: int,
    iters: int,
    precision: str,
    desc: str | None = None,
    cuda_graph: bool = False,
    cuda: Any = None,
) -> Measurement:
    """TensorRT engine latency, reported as trtexec does (see the module notes).

    ``stats`` is the GPU compute time; ``details`` holds host latency, enqueue time (each as full
    statistics), the pipelined throughput and whether the compute figure is a CUDA graph replay.
    ``cuda`` stands in for :class:`cdarts_deploy.deploy.trt_runner.TorchCuda` (tests).
    """

    runner = TensorRTRunner(engine_path, cuda)
    c, stream, batch = runner.cuda, runner.stream, input_shape[0]
    host_in = c.pinned(torch.randn(*input_shape))
    with c.on(stream):
        device_in = torch.empty(*input_shape, device=c.device)
    outputs = runner.bind(device_in)
    device_in = runner._input  # the engine's own input buffer (converted to its dtype by bind)
    host_out = [c.pinned(torch.empty(tuple(o.shape), dtype=o.dtype)) for o in outputs]

    compute = runner.enqueue
    if cuda_graph:
        for _ in range(2):  # TensorRT sets up shape-dependent state on the first launches
            runner.enqueue()
        stream.synchronize()
        compute = c.capture(runner.enqueue, stream)

    def host_step() -> None:
        with c.on(stream):
            device_in.copy_(host_in, non_blocking=True)
            runner.enqueue()
            for h, d in zip(host_out, outputs):
                h.copy_(d, non_blocking=True)

    gpu = time_events(compute, warmup, iters, c.event, stream, desc=desc)
    host = time_events(host_step, min(warmup, 5), iters, c.event, stream)
    enqueue: list[float] = []
    for _ in range(iters):
        start = time.perf_counter()
        runner.enqueue()
        enqueue.append((time.perf_counter() - start) * 1e3)
        stream.synchronize()
    # throughput as a pipeline: back-to-back launches, one pair of events around all of them
    first, last = c.event(), c.event()
    first.record(stream)
    for _ in range(iters):
        compute()
    last.record(stream)
    last.synchronize()
    pipelined_ms = first.elapsed_time(last)
    details = {
        "gpu_compute": summarize(gpu, batch, warmup).as_dict(),
        "host_latency": summarize(host, batch, min(warmup, 5)).as_dict(),
        "enqueue": summarize(enqueue, batch, 0).as_dict(),
        "throughput_ips_pipelined": batch * iters / (pipelined_ms / 1e3) if pipelined_ms > 0 else float("inf"),
        "cuda_graph": cuda_graph,
        "notes": {
            "gpu_compute": "events on the engine's stream around the execution only"
            + (" (CUDA graph replay)" if cuda_graph else " (execute_async_v3)"),
            "host_latency": "events around input copy (pinned host to device), execution and output copy back",
            "enqueue": "host time of the execute_async_v3 call (perf_counter)",
            "throughput_ips_pipelined": f"{iters} launches back to back, batch x launches / elapsed",
        },
    }
    region = ("GPU compute: " + details["notes"]["gpu_compute"] + ", input and outputs resident on the GPU "
              "(host latency, enqueue time and pipelined throughput in details)")
    return Measurement("tensorrt", "cuda", precision, region, summarize(gpu, batch, warmup), details)
