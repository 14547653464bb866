"""The machine's measured GEMM rate, multiply-adds of an ONNX graph, and the compute floor.

The compute floor of a model is ``2 x multiply-adds / GEMM rate``: the time the
arithmetic alone would take if every operation ran at the speed of a large,
well-shaped matrix multiply on this machine.  The rate is measured here, never
taken from a datasheet.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np


@dataclass(frozen=True)
class GemmRate:
    """Best sustained float32 matrix-multiply rate seen on this machine."""

    gflops: float
    size: int
    threads: int
    device: str
    dtype: str
    repeats: int

    def as_dict(self) -> dict:
        return asdict(self)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run a block with ``threads`` intra-op threads, restoring the old setting after."""
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def measure_gemm_rate(
    threads: int | None = None,
    sizes: tuple[int, ...] = (1024, 2048),
    repeats: int = 5,
    device: str = "cpu",
    dtype: str = "float32",
) -> GemmRate:
    """Measure the best rate of square matrix multiplies in GFLOP/s (2 flops per multiply-add).

    The best over ``sizes`` and ``repeats`` timed runs is kept: the floor is what
    the hardware can do, so interference from other processes should not lower it.
    """
    best = GemmRate(0.0, 0, 0, device, dtype, repeats)
    for size in sizes:
        rate = _gemm_rate_one_size(threads, size, repeats, device, dtype)
        if rate.gflops > best.gflops:
            best = rate
    return best


def _gemm_rate_one_size(threads: int | None, size: int, repeats: int, device: str, dtype: str) -> GemmRate:
    import torch

    torch_dtype = getattr(torch, dtype)
    with torch_threads(threads), torch.inference_mode():
        a = torch.randn(size, size, device=device, dtype=torch_dtype)
        b = torch.randn(size, size, device=device, dtype=torch_dtype)
        out = torch.empty(size, size, device=device, dtype=torch_dtype)
        sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        for _ in range(2):  # warm-up: thread pool start, caches, cuBLAS handles
            torch.mm(a, b, out=out)
        sync()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            sync()
            best = min(best, time.perf_counter() - start)
        used_threads = torch.get_num_threads()
    return GemmRate(
        gflops=2.0 * size**3 / best / 1e9,
        size=size,
        threads=used_threads if device == "cpu" else 0,
        device=device,
        dtype=dtype,
        repeats=repeats,
    )


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
    import onnx
    from onnx import shape_inference

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
    import tempfile
    from pathlib import Path

    import onnx

    from cdarts_deploy.deploy.ort import OnnxRuntimeError, fold_constants

    with tempfile.TemporaryDirectory(prefix="onnx-macs-") as work:
        src, dst = Path(work) / "fixed.onnx", Path(work) / "folded.onnx"
        onnx.save(model, str(src))
        try:
            fold_constants(src, dst)
        except OnnxRuntimeError:  # a graph ONNX Runtime cannot load: count on the unfolded graph
            return model
        return onnx.load(str(dst))
