"""Output parity between a PyTorch model and an exported runtime, tensor by tensor.

Tolerances follow numpy's ``allclose``: an element passes when
``|candidate - reference| <= atol + rtol * |reference|``.  ``max_rel`` is the
largest ``|candidate - reference| / (|reference| + atol)`` so that it stays
finite where the reference is zero.

Documented tolerances per precision:

========  ======  ======  =====================================================
precision  atol    rtol    meaning
========  ======  ======  =====================================================
fp32      1e-4    1e-3    float32 kernels differ only in summation order
fp16      5e-2    5e-2    half precision keeps ~3 significant digits
int8      --      --      judged by top-1 agreement on calibration images
========  ======  ======  =====================================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3),
    "fp16": Tolerance(atol=5e-2, rtol=5e-2),
}


@dataclass(frozen=True)
class TensorParity:
    """How one output tensor of a runtime compares with the PyTorch reference."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    cosine: float
    passed: bool

    def as_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def compare_tensor(name: str, reference: np.ndarray, candidate: np.ndarray, tol: Tolerance) -> TensorParity:
    """Compare one candidate tensor with its reference."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        return TensorParity(name, tuple(cand.shape), float("inf"), float("inf"), 0.0, False)
    diff = np.abs(cand - ref)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / (np.abs(ref) + tol.atol)).max()) if diff.size else 0.0
    denom = np.linalg.norm(ref) * np.linalg.norm(cand)
    cosine = float(np.dot(ref.ravel(), cand.ravel()) / denom) if denom > 0 else float(max_abs == 0.0)
    passed = bool(np.all(diff <= tol.atol + tol.rtol * np.abs(ref)))
    return TensorParity(name, tuple(ref.shape), max_abs, max_rel, cosine, passed)


def compare_outputs(
    names: Sequence[str],
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    precision: str = "fp32",
) -> list[TensorParity]:
    """Compare every output tensor; a missing or extra output is a failure."""
    tol = TOLERANCES[precision]
    if len(reference) != len(candidate):
        raise ValueError(f"runtime returned {len(candidate)} outputs, PyTorch {len(reference)}")
    return [compare_tensor(n, r, c, tol) for n, r, c in zip(names, reference, candidate)]


def torch_outputs(model, batch: np.ndarray) -> list[np.ndarray]:
    """Run a PyTorch model in inference mode and flatten its outputs to arrays."""
    import torch

    with torch.inference_mode():
        out = model(torch.from_numpy(batch))
    if isinstance(out, torch.Tensor):
        out = [out]
    return [t.detach().float().cpu().numpy() for t in out]


def onnxruntime_session(onnx_path: str, threads: int | None = None):
    """A CPU ONNX Runtime session (threads: intra-op thread count, None = runtime default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def onnxruntime_outputs(session, batch: np.ndarray) -> list[np.ndarray]:
    input_name = session.get_inputs()[0].name
    return list(session.run(None, {input_name: batch}))
