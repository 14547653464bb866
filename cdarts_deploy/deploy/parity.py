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

Before any runtime is judged on an input, the check must be able to tell that input from another
one (:func:`input_dependence`): PyTorch's own outputs on a *different* input must fail the same
rule.  A model whose outputs barely depend on the input (a random network with uncalibrated
BatchNorm: logits differ by ~1e-8 between images) would let an artifact that ignores its input, or
was fed another image, pass; such rows fail with the reason, at every batch size (batch 1 included:
the other input is a second reproducible random batch, larger batches compare each sample with
its neighbour).

FP16 and INT8 follow :mod:`cdarts_deploy.deploy.rules`: FP16 within 1.5 times PyTorch's own fp16 error on
the same input (plus top-1 and cosine for logits); INT8 element by element against ONNX Runtime CPU running
the same quantized file when the caller gives that reference (every input judged), and by top-1 agreement
with PyTorch FP32 (at least ``INT8_MIN_TOP1``) on real images, where the reference's agreement with its own
rolled batch must be low enough for top-1 to prove anything.  An INT8 comparison that judged no input fails.

Tolerances per precision (the one table):

=========  ======  ======  ==========================================================
precision  atol    rtol    meaning
=========  ======  ======  ==========================================================
fp32       1e-4    1e-3    float32 kernels differ only in summation order
fp16       --      --      1.5 x PyTorch's fp16 error + fp32's atol and rtol; top-1, cosine
int8       --      --      RMS 8 / max 32 output steps from ONNX Runtime CPU, same file;
                           top-1 agreement >= 0.8 with PyTorch on real images
=========  ======  ======  ==========================================================

(``TOLERANCES["fp16"]`` is the coarse per-layer bound of layer comparisons, not the output rule.)
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from cdarts_deploy.deploy import rules


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
    table["fp16"] = {"noise_factor": rules.FP16_NOISE_FACTOR, **table["fp32"], "plus": "top-1 and cosine on logits"}
    table["int8"] = {"rms_output_steps": rules.INT8_RMS_STEPS, "max_output_steps": rules.INT8_MAX_STEPS,
                     "against": "ONNX Runtime CPU on the same file",
                     "min_top1_agreement": INT8_MIN_TOP1, "inputs": "calibration images",
                     "max_rolled_top1": rules.MAX_ROLLED_TOP1}
    return table


def rule() -> dict[str, Any]:
    """The rule and its tolerances as a report section."""
    return {
        "rule": "max|runtime - torch| <= max(atol, 4 x torch_fp32_noise) + rtol * max|torch| per output tensor; "
        "torch_fp32_noise = max|torch float32 - torch float64| on the same input; fp16: 1.5 x torch's own fp16 "
        "error + the fp32 tolerance, top-1 and cosine; int8: RMS 8 and max 32 output steps from ONNX Runtime CPU "
        "on the same file, top-1 agreement with torch on the calibration images",
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
    return [float(np.abs(r.astype(np.float64) - e).max()) for r, e in zip(reference, _float64_outputs(model, batch))]


def torch_outputs(model: Any, batch: np.ndarray) -> list[np.ndarray]:
    """Run a PyTorch model in inference mode and flatten its outputs to arrays."""
    with torch.inference_mode():
        out = model(torch.from_numpy(batch))
    if isinstance(out, torch.Tensor):
        out = [out]
    return [t.detach().float().cpu().numpy() for t in out]


def outputs_depend_on_input(outputs: Sequence[np.ndarray]) -> bool:
    """Whether two different samples of a batch give different outputs (parity is meaningless otherwise)."""
    return any(o.shape[0] > 1 and not np.allclose(o[0], o[1], rtol=1e-4, atol=1e-6) for o in outputs)


def other_input(x: np.ndarray) -> np.ndarray:
    """A different input of the same shape and scale: the batch rolled by one sample, or (batch 1) a
    reproducible random batch with the mean and spread of ``x``."""
    if x.shape[0] > 1:
        return np.roll(x, 1, axis=0)
    rng = np.random.default_rng(1234)
    mean, std = float(x.mean()), float(x.std()) or 1.0
    return (rng.standard_normal(x.shape) * std + mean).astype(x.dtype)


def input_dependence(reference: "TorchReference", label: str, precision: str) -> dict:
    """Whether the ``precision`` rule can tell ``label``'s input from another input.

    PyTorch's outputs on :func:`other_input` are judged as if they came from a runtime; if they pass,
    a runtime that ignored its input (or got the wrong one) would pass too, so the check proves nothing.
    """
    wrong = reference.other_outputs(label)
    ref = reference.outputs(label)
    if precision == "fp16":
        tol = TOLERANCES["fp32"]
        judged = [rules.judge_fp16(r, w, h, tol.atol, tol.rtol)
                  for r, w, h in zip(ref, wrong, reference.fp16(label))]
        return {"input_dependent": not all(j["passed"] for j in judged),
                "other_input_max_abs": max((float(np.abs(r - w).max()) for r, w in zip(ref, wrong)), default=0.0)}
    results = compare_outputs([str(i) for i in range(len(ref))], ref, wrong, "fp32",
                              noise=reference.noise(label))
    return {"input_dependent": not all(r.passed for r in results),
            "other_input_max_abs": max((r.max_abs for r in results), default=0.0)}


def top1_agreement(reference_logits: np.ndarray, candidate_logits: np.ndarray) -> float:
    """Fraction of images whose arg-max class is the same in both."""
    ref = np.asarray(reference_logits).reshape(len(reference_logits), -1).argmax(1)
    cand = np.asarray(candidate_logits).reshape(len(candidate_logits), -1).argmax(1)
    return float((ref == cand).mean())


class TorchReference:
    """PyTorch FP32 outputs and float32 noise of one model on named inputs, computed once each.

    Inputs of one sample shape go through the model together: one float32 pass over every input (and
    the other inputs of the batch-1 ones, see :meth:`other_outputs`), one float64 copy and pass for the
    noise.  Eval-mode networks treat every sample on its own, so each input still gets its own outputs
    and noise; the passes are what costs (a deep network's per-call overhead, one float64 copy).  A model
    whose outputs do not keep the batch dimension is run input by input.
    """

    def __init__(self, model: Any, inputs: Mapping[str, np.ndarray]) -> None:
        self.model, self.inputs = model, dict(inputs)
        self._outputs: dict[str, list[np.ndarray]] = {}
        self._noise: dict[str, list[float]] = {}
        self._tried: set[str] = set()  # which shared pass ("float32", "float64") has run

    def outputs(self, label: str) -> list[np.ndarray]:
        if label not in self._outputs and "float32" not in self._tried:
            self._tried.add("float32")
            self._outputs.update(self._together(list(self.inputs)))
        if label not in self._outputs:
            self._outputs[label] = torch_outputs(self.model, self.inputs[label])
        return self._outputs[label]

    def other_outputs(self, label: str) -> list[np.ndarray]:
        """PyTorch's outputs on a different input of the same shape, aligned with :meth:`outputs`."""
        key = f"other:{label}"
        if key not in self._outputs:
            x = self.inputs[label]
            if x.shape[0] > 1:  # the rolled batch's outputs are the reference outputs rolled: no extra pass
                self._outputs[key] = [np.roll(o, 1, axis=0) for o in self.outputs(label)]
            else:
                self.outputs(label)  # the first pass computes the batch-1 inputs' other outputs as well
            if key not in self._outputs:
                self._outputs[key] = torch_outputs(self.model, other_input(x))
        return self._outputs[key]

    def fp16(self, label: str) -> list[np.ndarray]:
        """PyTorch's outputs with float16 storage on ``label``'s input (:func:`rules.fp16_outputs`)."""
        key = f"fp16:{label}"
        if key not in self._outputs:
            self._outputs[key] = rules.fp16_outputs(self.model, self.inputs[label])
        return self._outputs[key]

    def noise(self, label: str) -> list[float]:
        if label not in self._noise and "float64" not in self._tried:
            self._tried.add("float64")
            for k, exact in self._together(list(self.inputs), exact=True).items():
                self._noise[k] = [float(np.abs(r.astype(np.float64) - e).max()) for r, e in zip(self.outputs(k), exact)]
        if label not in self._noise:
            self._noise[label] = float32_noise(self.model, self.inputs[label], self.outputs(label))
        return self._noise[label]

    def _together(self, labels: list[str], exact: bool = False) -> dict[str, list[np.ndarray]]:
        """Outputs of ``labels`` (float32 with the batch-1 inputs' ``other:`` outputs, or ``exact``: float64)
        from one pass over the concatenated inputs; empty when they cannot share a pass."""
        arrays = {k: self.inputs[k] for k in labels}
        if not exact:
            arrays.update({f"other:{k}": other_input(x) for k, x in arrays.items() if x.shape[0] == 1})
        shapes = {(x.shape[1:], x.dtype) for x in arrays.values()}
        if len(arrays) < 2 or len(shapes) != 1:
            return {}
        batch = np.concatenate(list(arrays.values()))
        outs = _float64_outputs(self.model, batch) if exact else torch_outputs(self.model, batch)
        if not all(o.ndim and o.shape[0] == len(batch) for o in outs):
            return {}
        ends = np.cumsum([len(x) for x in arrays.values()])
        return {k: [o[end - len(x):end] for o in outs] for (k, x), end in zip(arrays.items(), ends)}


def _float64_outputs(model: Any, batch: np.ndarray) -> list[np.ndarray]:
    """The model's outputs computed in float64 (on a copy), as :func:`float32_noise` does."""
    exact = copy.deepcopy(model).double()
    with torch.inference_mode():
        out = exact(torch.from_numpy(batch).double())
    return [o.cpu().numpy() for o in ([out] if isinstance(out, torch.Tensor) else out)]


def compare_runtime(
    reference: TorchReference,
    run: Callable[[np.ndarray], Sequence[np.ndarray]],
    names: Sequence[str],
    precision: str = "fp32",
    runtime: str = "onnxruntime",
    labels: Sequence[str] | None = None,
    int8_reference: Callable[[np.ndarray], Sequence[np.ndarray]] | None = None,
    int8_steps: Mapping[str, float | None] | None = None,
) -> list[dict]:
    """Run a runtime on every reference input and judge it by the rule above; one row per output and input.

    Every input is first checked to be distinguishable from another input (:func:`input_dependence`);
    where it is not, its rows fail whatever the runtime returned.  INT8: ``int8_reference`` runs the same
    quantized file in ONNX Runtime on the CPU and ``int8_steps`` gives each output's step
    (:func:`rules.output_steps`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    rows: list[dict] = []
    for label in labels if labels is not None else list(reference.inputs):
        x = reference.inputs[label]
        out = list(run(x))
        head = {"runtime": runtime, "input": label, "batch": int(x.shape[0]), "precision": precision}
        if precision == "int8":
            rows += _int8_rows(reference, label, x, out, names, head, int8_reference, int8_steps or {})
            continue
        dependence = input_dependence(reference, label, precision)
        head.update(dependence)
        noise = reference.noise(label)
        results = compare_outputs(names, reference.outputs(label), out, precision, noise=noise)
        if precision == "fp16":
            tol = TOLERANCES["fp32"]
            for r, ref, cand, half, e in zip(results, reference.outputs(label), out, reference.fp16(label), noise):
                judged = rules.judge_fp16(ref, cand, half, tol.atol, tol.rtol)
                rows.append({**head, **r.as_dict(), **judged, "torch_fp32_noise": e,
                             "passed": judged["passed"] and head["input_dependent"]})
            continue
        rows += [{**head, **r.as_dict(), "passed": r.passed and dependence["input_dependent"], "torch_fp32_noise": e}
                 for r, e in zip(results, noise)]
    if precision == "int8" and not any(r.get("passed") is not None for r in rows):
        rows.append({"runtime": runtime, "input": "-", "precision": "int8", "passed": False,
                     "why": "INT8 was judged on no input; pass real images or ONNX Runtime CPU on the same file"})
    return rows


def _int8_rows(reference: TorchReference, label: str, x: np.ndarray, out: list[np.ndarray], names: Sequence[str],
               head: dict, int8_reference: Callable | None, steps: Mapping[str, float | None]) -> list[dict]:
    """INT8 rows of one input: element-wise against ONNX Runtime CPU on the same file (when given), top-1
    against PyTorch on real images; each refused when the reference cannot tell its input from another."""
    rows = []
    if int8_reference is not None:
        ref = list(int8_reference(x))
        other = rules.rolled(ref) if len(x) > 1 else list(int8_reference(other_input(x)))
        for name, r, c, o in zip(names, ref, out, other):
            judged = rules.judge_int8(r, c, steps.get(name))
            dependent = not rules.judge_int8(r, o, steps.get(name))["passed"]
            why = judged["why"] or ("" if dependent else "proves nothing: the reference's outputs on another input "
                                    "are within the same number of steps")
            rows.append({**head, "name": name, "against": "onnxruntime-cpu same file", **judged,
                         "input_dependent": dependent, "passed": not why, "why": why})
    top = top1_agreement(reference.outputs(label)[0], out[0])
    agree_rolled = rules.rolled_top1(reference.outputs(label)[0])
    proves = agree_rolled is not None and agree_rolled <= rules.MAX_ROLLED_TOP1
    row = {**head, "name": names[0], "against": "torch fp32 top-1", "top1_agreement": top,
           "reference_rolled_top1": agree_rolled, "input_dependent": proves, "passed": None}
    if label == IMAGES:  # top-1 is judged on real images; on random inputs classes hardly move
        row["passed"] = top >= INT8_MIN_TOP1 and proves
        row["why"] = "" if proves else (
            f"top-1 proves nothing: PyTorch's own top-1 agrees with its rolled batch on {agree_rolled:.0%} "
            f"(must be at most {rules.MAX_ROLLED_TOP1:.0%})" if agree_rolled is not None
            else "top-1 proves nothing on a single image")
    return rows + [row]


def failures(rows: Sequence[dict], what: str = "") -> list[str]:
    """One message per failed row."""
    prefix = f"{what} " if what else ""
    out = []
    for r in rows:
        if r.get("passed") is not False:
            continue
        if r.get("why"):
            out.append(f"{prefix}{r['runtime']} {r['precision']} {r.get('name', '')} on {r['input']}: {r['why']}")
        elif r.get("input_dependent") is False:
            out.append(f"{prefix}{r['runtime']} {r['precision']} check on {r['input']} proves nothing: PyTorch's "
                       f"outputs on another input (max difference {r['other_input_max_abs']:.3g}) pass the same "
                       f"tolerance, so the outputs hardly depend on the input; use trained weights or "
                       f"calibrated BatchNorm statistics")
        elif "top1_agreement" in r:
            out.append(f"{prefix}{r['runtime']} INT8 top-1 agreement {r['top1_agreement']:.0%} on the {r['input']} "
                       f"(need {INT8_MIN_TOP1:.0%})")
        else:
            out.append(f"{prefix}{r['runtime']} {r['precision']} output {r['name']} on {r['input']} differs from "
                       f"PyTorch (max abs {r['max_abs']:.3g}, max rel {r['max_rel']:.3g}, cosine {r['cosine']:.6f}) "
                       f"beyond the {r['precision']} tolerance")
    return out
