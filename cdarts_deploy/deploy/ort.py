"""The one ONNX Runtime session factory, running a session on one batch, and ONNX Runtime's constant folding."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort

from cdarts_deploy.errors import UserError


class OnnxRuntimeError(UserError):
    """ONNX Runtime cannot load the file or lacks the requested device."""


def _options(threads: int | None, optimize: bool | str) -> Any:
    options = ort.SessionOptions()
    levels = {True: ort.GraphOptimizationLevel.ORT_ENABLE_ALL, False: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}
    options.graph_optimization_level = levels[optimize]
    # errors only: optional inputs (initializers listed as inputs) draw a warning at every session
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def _open(model: str | os.PathLike | bytes, options: Any, chosen: list, what: str) -> Any:
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=chosen)
    except Exception as exc:  # onnxruntime raises its own exception types for invalid files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxRuntimeError(f"{what} is not a usable ONNX model ({first[:200]}); pass a file written by "
                               "cdarts-export") from None


def providers(device: str = "cpu", tf32: bool = False) -> list:
    """The execution providers :func:`session` passes for ``device``.

    CUDA gets ``use_tf32`` set explicitly: the CUDA provider's default is on, which rounds float32
    convolutions and GEMMs to 10-bit mantissas on Ampere and newer GPUs; such a session would be judged
    and timed as FP32 while it is not.  ``tf32=True`` turns it on knowingly.
    """
    if device.startswith("cuda"):
        return [("CUDAExecutionProvider", {"use_tf32": "1" if tf32 else "0"}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session(onnx_model: str | os.PathLike | bytes, threads: int | None = None, device: str = "cpu",
            optimize: bool = True, tf32: bool = False) -> Any:
    """An ONNX Runtime session on a file (or serialized model bytes).

    ``threads``: intra-op threads (None = the runtime's default, all cores) and one inter-op thread;
    ``device``: ``cpu`` or ``cuda`` (needs onnxruntime-gpu's CUDAExecutionProvider; TF32 off unless ``tf32``,
    see :func:`providers`);
    ``optimize``: full graph optimization, or none (every tensor computed as exported, for layer comparisons).
    """
    if device.startswith("cuda") and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise OnnxRuntimeError(
            "ONNX Runtime has no CUDAExecutionProvider here; install onnxruntime-gpu or profile on the CPU"
        )
    what = "the model" if isinstance(onnx_model, bytes) else str(onnx_model)
    return _open(onnx_model, _options(threads, optimize), providers(device, tf32), what)


def tf32_enabled(sess: Any) -> bool | None:
    """Whether a session's CUDA provider runs float32 in TF32 (None: no CUDA provider), as ONNX Runtime
    reports its options."""
    options = sess.get_provider_options().get("CUDAExecutionProvider")
    return None if options is None else options.get("use_tf32") == "1"


def output_names(sess: Any) -> list[str]:
    return [o.name for o in sess.get_outputs()]


def run(sess: Any, batch: np.ndarray) -> list[np.ndarray]:
    """All outputs of ``sess`` for one input batch."""
    return list(sess.run(None, {sess.get_inputs()[0].name: batch}))


def fold_constants(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Write ``src`` with ONNX Runtime's basic (semantics-preserving) optimizations applied to ``dst``:
    constant subgraphs folded, Conv/BatchNorm and similar pairs fused."""
    options = _options(None, "basic")
    options.optimized_model_filepath = str(dst)
    _open(src, options, providers(), str(src))
