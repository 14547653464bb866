"""The machine's measured GEMM rate, multiply-adds of an ONNX graph, and the compute floor.

The compute floor of a model is ``2 x multiply-adds / GEMM rate``: the time the
arithmetic alone would take if every operation ran at the speed of a large,
well-shaped matrix multiply on this machine.  The rate is measured here, never
taken from a datasheet: the median of repeated runs of both PyTorch's and ONNX Runtime's float32
GEMM, the higher one kept, with its spread and the load average at the time.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, shape_inference

from cdarts_deploy.deploy import ort
from cdarts_deploy.deploy.ort import OnnxRuntimeError, fold_constants


@dataclass(frozen=True)
class GemmRate:
    """The machine's float32 matrix-multiply ceiling: the higher of PyTorch's and ONNX Runtime's median rates.

    ``spread`` gives, for the kept runtime and size, the lowest, median and highest rate of the
    repeated runs (GFLOP/s); ``medians`` every runtime's and size's median; ``loadavg`` the 1/5/15
    minute load average when it was measured (other processes lower the rate).
    """

    gflops: float
    size: int
    threads: int
    device: str
    dtype: str
    repeats: int
    runtime: str = "torch"
    spread: dict = field(default_factory=dict)
    medians: dict = field(default_factory=dict)
    loadavg: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run a block with ``threads`` intra-op threads, restoring the old setting after."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (empty where the platform has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return []


def measure_gemm_rate(
    threads: int | None = None,
    sizes: tuple[int, ...] = (1024, 2048),
    repeats: int = 7,
    device: str = "cpu",
    dtype: str = "float32",
    runtimes: tuple[str, ...] = ("torch", "onnxruntime"),
) -> GemmRate:
    """Measure the GEMM ceiling in GFLOP/s (2 flops per multiply-add).

    Each runtime (PyTorch ``torch.mm``; ONNX Runtime on a one-node MatMul model, CPU float32 only)
    runs ``repeats`` timed multiplies per size after a warm-up; a runtime's rate at a size is the
    median of its runs (one lucky or unlucky run does not decide), and the ceiling is the highest
    median over runtimes and sizes.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    load = load_average()
    medians: dict[str, dict[str, float]] = {}
    best: tuple[float, str, int, list[float]] | None = None
    for runtime in runtimes:
        if runtime == "onnxruntime" and (device != "cpu" or dtype != "float32"):
            continue
        for size in sizes:
            rates = (_torch_rates if runtime == "torch" else _onnxruntime_rates)(threads, size, repeats, device, dtype)
            median = float(np.median(rates))
            medians.setdefault(runtime, {})[str(size)] = median
            if best is None or median > best[0]:
                best = (median, runtime, size, rates)
    if best is None:
        raise ValueError(f"no GEMM runtime applies to {device} {dtype}")
    median, runtime, size, rates = best
    with torch_threads(threads):
        used = torch.get_num_threads()
    spread = {"min": float(np.min(rates)), "median": median, "max": float(np.max(rates)),
              "rel_range": float((np.max(rates) - np.min(rates)) / median) if median else 0.0}
    return GemmRate(median, size, used if device == "cpu" else 0, device, dtype, repeats, runtime, spread, medians,
                    load)


def _torch_rates(threads: int | None, size: int, repeats: int, device: str, dtype: str) -> list[float]:
    torch_dtype = getattr(torch, dtype)
    with torch_threads(threads), torch.inference_mode():
        a = torch.randn(size, size, device=device, dtype=torch_dtype)
        b = torch.randn(size, size, device=device, dtype=torch_dtype)
        out = torch.empty(size, size, device=device, dtype=torch_dtype)
        sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        for _ in range(2):  # warm-up: thread pool start, caches, cuBLAS handles
            torch.mm(a, b, out=out)
        sync()
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            sync()
            rates.append(2.0 * size**3 / (time.perf_counter() - start) / 1e9)
    return rates


def _onnxruntime_rates(threads: int | None, size: int, repeats: int, device: str, dtype: str) -> list[float]:


    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    rng = np.random.default_rng(0)
    feed = {"a": rng.standard_normal((size, size), dtype=np.float32),
            "b": rng.standard_normal((size, size), dtype=np.float32)}
    with tempfile.TemporaryDirectory(prefix="gemm-") as work:
        path = Path(work) / "matmul.onnx"
        onnx.save(model, str(path))
        session = ort.session(path, threads)
    for _ in range(2):
        session.run(None, feed)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        rates.append(2.0 * size**3 / (time.perf_counter() - start) / 1e9)
    return rates


def compute_floor_ms(macs: float, gemm_gflops: float) -> float:
    """Milliseconds the multiply-adds would take at the measured GEMM rate."""
    return 2.0 * macs / (gemm_gflops * 1e9) * 1e3


def achieved_gflops(macs: float, latency_ms: float) -> float:
    """Rate actually delivered: 2 x multiply-adds over the measured latency."""
    return 2.0 * macs / (latency_ms * 1e-3) / 1e9


# ---------------------------------------------------------------------------
# Multiply-adds read from an ONNX graph (for models given as ONNX files)
# ---------------------------------------------------------------------------


def onnx_macs(model_or_path, batch: int = 1, input_hw: tuple[int, int] | None = None) -> int:
    """Multiply-adds of Conv, ConvTranspose, Gemm and MatMul nodes for one forward pass.

    Dynamic dimensions of the first input are fixed (batch, and height/width
    when ``input_hw`` is given) and shapes are inferred, so the count is for
    that exact input.  Element-wise operations are not counted, matching the
    plain multiply-add convention of the DARTS papers.
    """
    model = onnx.load(str(model_or_path)) if not isinstance(model_or_path, onnx.ModelProto) else model_or_path
    model = onnx.ModelProto.FromString(model.SerializeToString())  # edit a copy
    initializer_names = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializer_names]
    if inputs:
        dims = inputs[0].type.tensor_type.shape.dim
        fixed = [batch] + ([None, *input_hw] if input_hw else [])
        for dim, value in zip(dims, fixed):
            if value is not None:
                dim.Clear()
                dim.dim_value = value
    for extra in inputs[1:]:
        for dim in extra.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.Clear()
                dim.dim_value = batch
    inferred = shape_inference.infer_shapes(_constant_folded(model), data_prop=True)
    shapes: dict[str, list[int]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)

    total = 0
    for node in inferred.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            w = shapes.get(node.input[1])
            y = shapes.get(node.output[0])
            if not w or not y or 0 in y:
                continue
            if node.op_type == "Conv":
                # each output element sums (C_in / group) x kernel products
                total += int(np.prod(y)) * int(np.prod(w[1:]))
            else:
                x = shapes.get(node.input[0])
                if x and 0 not in x:
                    # each input element scatters into (C_out / group) x kernel outputs
                    total += int(np.prod(x)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0])
            y = shapes.get(node.output[0])
            if not a or not y or 0 in a or 0 in y:
                continue
            trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
            k = a[-2] if (node.op_type == "Gemm" and trans_a) else a[-1]
            total += int(np.prod(y)) * int(k)
    return total


def _constant_folded(model):
    """``model`` with constant subgraphs folded by ONNX Runtime's basic optimizations.

    Exporters compute some operator arguments (e.g. the pads of a Pad) with small constant
    subgraphs that onnx's shape inference cannot see through; folded, every shape is known.
    Only semantics-preserving rewrites run at this level, so the multiply-adds stay the same.
    """


    with tempfile.TemporaryDirectory(prefix="onnx-macs-") as work:
        src, dst = Path(work) / "fixed.onnx", Path(work) / "folded.onnx"
        onnx.save(model, str(src))
        try:
            fold_constants(src, dst)
        except OnnxRuntimeError:  # a graph ONNX Runtime cannot load: count on the unfolded graph
            return model
        return onnx.load(str(dst))
