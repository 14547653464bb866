# READY-FOR-EXTENSION (engineer E may extend this module for issue 3)
"""Output parity between a PyTorch model and an exported runtime, tensor by tensor.

A tensor passes when every element satisfies
``|candidate - reference| <= atol + rtol * max|reference|``: the relative part
is taken against the tensor's scale (its largest magnitude), not element by
element, because logits near zero carry the absolute rounding error of a deep
float32 network (about 1e-3 after 14 DARTS cells) and would otherwise fail on
noise.  Deep random networks can amplify rounding further, so callers may pass
each output's *float32 noise* -- the largest difference between PyTorch in
float32 and the same model in float64 on the same input (:func:`float32_noise`)
-- and the absolute tolerance widens to ``NOISE_FACTOR`` times that noise: a
runtime must agree with PyTorch about as well as PyTorch agrees with exact
arithmetic.  ``max_rel`` reports the largest element-wise
``|candidate - reference| / (|reference| + atol)`` for information, and the
cosine similarity is reported alongside.

Documented tolerances per precision:

========  ======  ======  =====================================================
precision  atol    rtol    meaning
========  ======  ======  =====================================================
fp32      1e-4    1e-3    float32 kernels differ only in summation order
fp16      5e-2    5e-2    half precision keeps ~3 significant digits
int8      --      --      top-1 agreement >= 0.8 on calibration images
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

#: How many times PyTorch's own float32-vs-float64 error a runtime may differ by.
NOISE_FACTOR = 4.0

#: INT8 outputs are not compared element-wise: the arg-max class must match PyTorch FP32 on at least this
#: fraction of the calibration images (issue 3).
INT8_MIN_TOP1 = 0.8


def tolerance_table() -> dict[str, dict]:
    """The documented tolerances, for reports."""
    table: dict[str, dict] = {k: {"atol": t.atol, "rtol": t.rtol} for k, t in TOLERANCES.items()}
    table["int8"] = {"min_top1_agreement": INT8_MIN_TOP1, "inputs": "calibration images"}
    return table


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
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    passed = bool(max_abs <= tol.atol + tol.rtol * scale)
    return TensorParity(name, tuple(ref.shape), max_abs, max_rel, cosine, passed)


def compare_outputs(
    names: Sequence[str],
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    precision: str = "fp32",
    noise: Sequence[float] | None = None,
) -> list[TensorParity]:
    """Compare every output tensor; a missing or extra output is a failure.

    ``noise`` (one value per output, from :func:`float32_noise`) widens the absolute tolerance.
    """
    tol = TOLERANCES[precision]
    if len(reference) != len(candidate):
        raise ValueError(f"runtime returned {len(candidate)} outputs, PyTorch {len(reference)}")
    noise = list(noise) if noise is not None else [0.0] * len(reference)
    return [
        compare_tensor(n, r, c, Tolerance(max(tol.atol, NOISE_FACTOR * e), tol.rtol))
        for n, r, c, e in zip(names, reference, candidate, noise)
    ]


def float32_noise(model, batch: np.ndarray, reference: Sequence[np.ndarray]) -> list[float]:
    """Per output, the largest |float32 - float64| of the PyTorch model itself on ``batch``."""
    import copy

    import torch

    exact = copy.deepcopy(model).double()
    with torch.inference_mode():
        out = exact(torch.from_numpy(batch).double())
    if isinstance(out, torch.Tensor):
        out = [out]
    return [float(np.abs(r.astype(np.float64) - o.cpu().numpy()).max()) for r, o in zip(reference, out)]


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
