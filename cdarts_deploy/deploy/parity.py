"""The one parity rule between a PyTorch model and an exported runtime, tensor by tensor.

Every exported artifact (classifier, features backbone, detector, segmentor; FP32, FP16 and INT8;
ONNX Runtime and TensorRT) is judged here, against PyTorch FP32 eager on the same input.

Floating-point precisions: an output tensor passes when every element satisfies

    |candidate - reference| <= max(atol, NOISE_FACTOR * noise) + rtol * max|reference|

* the relative part is taken against the tensor's scale (its largest magnitude), not element by
  element, because logits near zero carry the absolute rounding error of a deep float32 network
  (about 1e-3 after 14 DARTS cells) and would otherwise fail on noise;
* ``noise`` is PyTorch's own float32 error on that input: the largest difference between the
  model in float32 and the same model in float64 (:func:`float32_noise`).  Deep random networks
  amplify rounding, so a runtime must agree with PyTorch about as well as PyTorch agrees with exact
  arithmetic;
* ``max_rel`` (largest element-wise ``|candidate - reference| / (|reference| + atol)``) and the
  cosine similarity are reported for information.

INT8 outputs are not compared element by element: the arg-max class must match PyTorch FP32 on at
least ``INT8_MIN_TOP1`` of real images (the calibration images); on random inputs the agreement is
reported only.

Tolerances per precision (the one table):

=========  ======  ======  ==========================================================
precision  atol    rtol    meaning
=========  ======  ======  ==========================================================
fp32       1e-4    1e-3    float32 kernels differ only in summation order
fp16       5e-2    5e-2    half precision keeps ~3 significant digits
int8       --      --      top-1 agreement >= 0.8 on the calibration images
=========  ======  ======  ==========================================================
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

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

#: INT8: the arg-max class must match PyTorch FP32 on at least this fraction of real images.
INT8_MIN_TOP1 = 0.8

#: The input label under which real (calibration) images are compared; INT8 is judged on these only.
IMAGES = "images"

PRECISIONS = ("fp32", "fp16", "int8")


def tolerance_table() -> dict[str, dict]:
    """The documented tolerances, for reports."""
    table: dict[str, dict] = {k: {"atol": t.atol, "rtol": t.rtol} for k, t in TOLERANCES.items()}
    table["int8"] = {"min_top1_agreement": INT8_MIN_TOP1, "inputs": "calibration images"}
    return table


def rule() -> dict[str, Any]:
    """The rule and its tolerances as a report section."""
    return {
        "rule": "max|runtime - torch| <= max(atol, 4 x torch_fp32_noise) + rtol * max|torch| per output tensor; "
        "torch_fp32_noise = max|torch float32 - torch float64| on the same input; int8: top-1 agreement with "
        "torch on the calibration images",
        "noise_factor": NOISE_FACTOR,
        "tolerances": tolerance_table(),
        "reference": "PyTorch FP32 eager",
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


def float32_noise(model: Any, batch: np.ndarray, reference: Sequence[np.ndarray]) -> list[float]:
    """Per output, the largest |float32 - float64| of the PyTorch model itself on ``batch``."""
    import torch

    exact = copy.deepcopy(model).double()
    with torch.inference_mode():
        out = exact(torch.from_numpy(batch).double())
    if isinstance(out, torch.Tensor):
        out = [out]
    return [float(np.abs(r.astype(np.float64) - o.cpu().numpy()).max()) for r, o in zip(reference, out)]


def torch_outputs(model: Any, batch: np.ndarray) -> list[np.ndarray]:
    """Run a PyTorch model in inference mode and flatten its outputs to arrays."""
    import torch

    with torch.inference_mode():
        out = model(torch.from_numpy(batch))
    if isinstance(out, torch.Tensor):
        out = [out]
    return [t.detach().float().cpu().numpy() for t in out]


def outputs_depend_on_input(outputs: Sequence[np.ndarray]) -> bool:
    """Whether two different samples of a batch give different outputs (parity is meaningless otherwise)."""
    return any(o.shape[0] > 1 and not np.allclose(o[0], o[1], rtol=1e-4, atol=1e-6) for o in outputs)


def top1_agreement(reference_logits: np.ndarray, candidate_logits: np.ndarray) -> float:
    """Fraction of images whose arg-max class is the same in both."""
    ref = np.asarray(reference_logits).reshape(len(reference_logits), -1).argmax(1)
    cand = np.asarray(candidate_logits).reshape(len(candidate_logits), -1).argmax(1)
    return float((ref == cand).mean())


class TorchReference:
    """PyTorch FP32 outputs and float32 noise of one model on named inputs, computed once each."""

    def __init__(self, model: Any, inputs: Mapping[str, np.ndarray]) -> None:
        self.model, self.inputs = model, dict(inputs)
        self._outputs: dict[str, list[np.ndarray]] = {}
        self._noise: dict[str, list[float]] = {}

    def outputs(self, label: str) -> list[np.ndarray]:
        if label not in self._outputs:
            self._outputs[label] = torch_outputs(self.model, self.inputs[label])
        return self._outputs[label]

    def noise(self, label: str) -> list[float]:
        if label not in self._noise:
            self._noise[label] = float32_noise(self.model, self.inputs[label], self.outputs(label))
        return self._noise[label]


def compare_runtime(
    reference: TorchReference,
    run: Callable[[np.ndarray], Sequence[np.ndarray]],
    names: Sequence[str],
    precision: str = "fp32",
    runtime: str = "onnxruntime",
    labels: Sequence[str] | None = None,
) -> list[dict]:
    """Run a runtime on every reference input and judge it by the rule above; one row per output and input."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    rows: list[dict] = []
    for label in labels if labels is not None else list(reference.inputs):
        x = reference.inputs[label]
        out = list(run(x))
        head = {"runtime": runtime, "input": label, "batch": int(x.shape[0]), "precision": precision}
        if precision == "int8":
            agreement = top1_agreement(reference.outputs(label)[0], out[0])
            rows.append({**head, "name": names[0], "top1_agreement": agreement,
                         "passed": agreement >= INT8_MIN_TOP1 if label == IMAGES else None})
            continue
        noise = reference.noise(label)
        results = compare_outputs(names, reference.outputs(label), out, precision, noise=noise)
        rows += [{**head, **r.as_dict(), "torch_fp32_noise": e} for r, e in zip(results, noise)]
    return rows


def failures(rows: Sequence[dict], what: str = "") -> list[str]:
    """One message per failed row."""
    prefix = f"{what} " if what else ""
    out = []
    for r in rows:
        if r.get("passed") is not False:
            continue
        if "top1_agreement" in r:
            out.append(f"{prefix}{r['runtime']} INT8 top-1 agreement {r['top1_agreement']:.0%} on the {r['input']} "
                       f"(need {INT8_MIN_TOP1:.0%})")
        else:
            out.append(f"{prefix}{r['runtime']} {r['precision']} output {r['name']} on {r['input']} differs from "
                       f"PyTorch (max abs {r['max_abs']:.3g}, max rel {r['max_rel']:.3g}, cosine {r['cosine']:.6f}) "
                       f"beyond the {r['precision']} tolerance")
    return out
