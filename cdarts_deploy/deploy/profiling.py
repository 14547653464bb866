"""Latency of one model on one backend: PyTorch eager or compiled, ONNX Runtime, TensorRT.

Each backend prepares a step function for one batch, times it with :mod:`cdarts_deploy.deploy.timing`
and says what the timed region holds (``timed_region``): the input batch is prepared before it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from cdarts_deploy.deploy import ort
from cdarts_deploy.deploy.timing import LatencyStats, summarize, time_cuda, time_host
from cdarts_deploy.errors import UserError

BACKENDS = ("torch", "torch-compile", "onnxruntime", "tensorrt")


class ProfileError(UserError):
    """Bad profiling input: reported as one line, exit status 2."""


@dataclass
class Measurement:
    backend: str
    device: str
    precision: str
    timed_region: str
    stats: LatencyStats


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
    import torch

    if precision not in ("fp32", "fp16"):
        raise ProfileError(f"precision {precision!r} is not available for PyTorch; use fp32 or fp16")
    if precision == "fp16" and not device.startswith("cuda"):
        raise ProfileError("fp16 PyTorch timing needs a CUDA device; use --precision fp32 on the CPU")
    dtype = torch.float16 if precision == "fp16" else torch.float32
    model = model.to(device=device, dtype=dtype).eval()
    runner = torch.compile(model) if compile else model
    x = torch.randn(*input_shape, device=device, dtype=dtype)

    def step() -> None:
        with torch.inference_mode():
            runner(x)

    name = "torch-compile" if compile else "torch"
    if device.startswith("cuda"):
        times = time_cuda(step, warmup, iters, desc=desc)
        region = "forward only: input resident on the GPU before timing, outputs left on the GPU (CUDA events)"
    else:
        times = time_host(step, warmup, iters, desc=desc)
        region = "forward only: input tensor created before timing, outputs not copied (perf_counter)"
    if compile:
        region += "; compilation happens during warm-up"
    return Measurement(name, device, precision, region, summarize(times, input_shape[0], warmup))


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
    return Measurement("onnxruntime", device, precision, region + " (perf_counter)", summarize(times, input_shape[0], warmup))


def measure_tensorrt(
    engine_path: str | os.PathLike,
    input_shape: tuple[int, ...],
    warmup: int,
    iters: int,
    precision: str,
    desc: str | None = None,
) -> Measurement:
    """TensorRT engine latency; input and outputs stay on the GPU."""
    import torch

    from cdarts_deploy.deploy.trt import TensorRTRunner

    runner = TensorRTRunner(engine_path)
    runner.bind(torch.randn(*input_shape, device="cuda"))
    times = time_cuda(runner.enqueue, warmup, iters, stream=runner.stream, desc=desc)
    region = "execute_async_v3 only: input and outputs resident on the GPU, no host copies (CUDA events)"
    return Measurement("tensorrt", "cuda", precision, region, summarize(times, input_shape[0], warmup))
