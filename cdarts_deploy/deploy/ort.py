"""The one ONNX Runtime session factory, running a session on one batch, and ONNX Runtime's constant folding."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from cdarts_deploy.errors import UserError


class OnnxRuntimeError(UserError):
    """ONNX Runtime cannot load the file or lacks the requested device."""


def session(onnx_path: str | os.PathLike, threads: int | None = None, device: str = "cpu") -> Any:
    """An ONNX Runtime session with full graph optimization.

    ``threads``: intra-op threads (None = the runtime's default, all cores) and one inter-op thread;
    ``device``: ``cpu`` or ``cuda`` (needs onnxruntime-gpu's CUDAExecutionProvider).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise OnnxRuntimeError(
                "ONNX Runtime has no CUDAExecutionProvider here; install onnxruntime-gpu or profile on the CPU"
            )
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(onnx_path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for invalid files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxRuntimeError(
            f"{onnx_path} is not a usable ONNX model ({first[:200]}); pass a file written by cdarts-export"
        ) from None


def output_names(sess: Any) -> list[str]:
    return [o.name for o in sess.get_outputs()]


def run(sess: Any, batch: np.ndarray) -> list[np.ndarray]:
    """All outputs of ``sess`` for one input batch."""
    return list(sess.run(None, {sess.get_inputs()[0].name: batch}))


def fold_constants(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Write ``src`` with ONNX Runtime's basic (semantics-preserving) optimizations applied to ``dst``:
    constant subgraphs folded, Conv/BatchNorm and similar pairs fused."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dst)
    try:
        ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for invalid files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxRuntimeError(f"{src} is not a usable ONNX model ({first[:200]})") from None
