"""The parity section: PyTorch on the device in FP32 (TF32 off), FP16 and BF16 autocast against the CPU FP32 model,
judged by the project's rule, with two negative controls that must fail."""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Mapping, Sequence

import torch

from cdarts_deploy.deploy import parity
from cdarts_deploy.deploy.model_spec import random_batch
from cdarts_deploy.deploy.profiling import fp32_math

from .context import Context

#: BF16 keeps 8 significant bits, 3 fewer than FP16, so its rounding is 8x coarser; with CPU autocast the
#: zoo networks' BF16 logits stray several times further from FP32 than their FP16 logits do
#: (docs/results/reduced_precision_logit_error.md), so the FP16 rule (0.05 + 5%) would leave no margin.
BF16_TOLERANCE = (0.1, 0.1)  # atol, rtol as in parity.TOLERANCES

#: Negative controls: relative weight noise of the stem only (judged by the FP32 rule; what it does to the
#: logits: docs/results/reduced_precision_logit_error.md), and of every weight (judged by the loosest rule used).
STEM_PERTURBATION = 1e-2
GROSS_PERTURBATION = 0.25


def device_runner(model: Any, device: str, precision: str) -> Callable[[Any], list]:
    """Run a private copy of ``model`` on ``device``: FP32 with TF32 off, or FP16 / BF16 autocast."""
    copy_ = copy.deepcopy(model).to(device).eval()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)

    def run(x) -> list:
        t = torch.from_numpy(x).to(device)
        autocast = torch.autocast(device_type=device, dtype=dtype) if dtype else contextlib.nullcontext()
        with fp32_math(device, precision), torch.no_grad(), autocast:
            out = copy_(t)
        outs = [out] if isinstance(out, torch.Tensor) else list(out)
        return [o.detach().float().cpu().numpy() for o in outs]

    return run


def compare_bf16(reference: Any, run: Callable, names: Sequence[str], runtime: str,
                 tolerance: tuple[float, float] = BF16_TOLERANCE) -> list[dict]:
    """The project's rule at the BF16 tolerance (parity.compare_runtime has no BF16 entry), input dependence
    included: PyTorch's outputs on another input must fail the same tolerance."""
    atol, rtol = tolerance
    rows = []
    for label, x in reference.inputs.items():
        out, ref, noise = list(run(x)), reference.outputs(label), reference.noise(label)
        tols = [parity.Tolerance(max(atol, parity.NOISE_FACTOR * e), rtol) for e in noise]
        wrong = [parity.compare_tensor("other", r, w, t) for r, w, t in zip(ref, reference.other_outputs(label), tols)]
        dependent = not all(w.passed for w in wrong)
        for name, r, c, t, e in zip(names, ref, out, tols, noise):
            res = parity.compare_tensor(name, r, c, t)
            rows.append({"runtime": runtime, "input": label, "batch": int(x.shape[0]), "precision": "bf16",
                         "input_dependent": dependent, "other_input_max_abs": max(w.max_abs for w in wrong),
                         **res.as_dict(), "passed": res.passed and dependent, "torch_fp32_noise": e})
    return rows


def perturbed(model: Any, scale: float, stem_only: bool, seed: int = 5) -> Any:
    """A copy whose convolution and linear weights are multiplied by (1 + scale * N(0, 1)): a different model."""
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    layers = [m for m in other.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        for layer in layers[:1] if stem_only else layers:
            layer.weight.mul_(1 + scale * torch.randn(layer.weight.shape, generator=generator))
    return other


def parity_for_model(model: Any, inputs: Mapping[str, Any], device: str, precisions: Sequence[str] = ("fp32", "fp16",
                     "bf16"), stem_perturbation: float = STEM_PERTURBATION,
                     gross_perturbation: float = GROSS_PERTURBATION) -> dict:
    """Rows of ``model`` on ``device`` per precision against the CPU FP32 reference, and the two negative
    controls, which must fail; ``checks`` says whether all rows passed and both controls failed."""
    reference = parity.TorchReference(model, inputs)
    names = [f"output{i}" for i in range(len(reference.outputs(next(iter(inputs)))))]
    runtime = f"torch-{device}"
    rows: list[dict] = []
    for precision in precisions:
        run = device_runner(model, device, precision)
        rows += (compare_bf16(reference, run, names, runtime) if precision == "bf16" else
                 parity.compare_runtime(reference, run, names, precision, runtime))
    # the controls go through the same device path: a harness that returned the reference, or a rule too
    # loose to see a different model, would let them pass
    stem = parity.compare_runtime(reference, device_runner(perturbed(model, stem_perturbation, True), device,
                                                           "fp32"), names, "fp32", f"{runtime}-control-stem")
    loosest = "bf16" if "bf16" in precisions else "fp16" if "fp16" in precisions else "fp32"
    gross_run = device_runner(perturbed(model, gross_perturbation, False), device, "fp32")
    gross = (compare_bf16(reference, gross_run, names, f"{runtime}-control-all") if loosest == "bf16" else
             parity.compare_runtime(reference, gross_run, names, loosest, f"{runtime}-control-all"))
    bad = [r for r in rows if not r["passed"]]
    checks = [
        {"name": "every precision within its tolerance, on inputs the rule can tell apart",
         "passed": not bad, "detail": "; ".join(parity.failures(bad)[:3]) or f"{len(rows)} rows passed"},
        {"name": f"negative control: stem weights x (1 + {stem_perturbation:g} N(0,1)) fails the fp32 rule",
         "passed": any(r["passed"] is False for r in stem),
         "detail": f"largest difference {max(r['max_abs'] for r in stem):.3g}"
         + ("" if any(r["passed"] is False for r in stem) else ": the control passed, so the check proves nothing")},
        {"name": f"negative control: every weight x (1 + {gross_perturbation:g} N(0,1)) fails the {loosest} rule",
         "passed": any(r["passed"] is False for r in gross),
         "detail": f"largest difference {max(r['max_abs'] for r in gross):.3g}"
         + ("" if any(r["passed"] is False for r in gross) else ": the control passed, so the check proves nothing")},
    ]
    return {"parity": rows, "controls": stem + gross, "checks": checks}


def parity_section(ctx: Context) -> dict:
    out: dict[str, Any] = {"parity": [], "controls": [], "checks": [],
                           "rule": {"fp32 / fp16": "cdarts_deploy.deploy.parity (project rule)",
                                    "bf16": {"atol": BF16_TOLERANCE[0], "rtol": BF16_TOLERANCE[1]},
                                    "reference": "CPU FP32 eager, calibrated BatchNorm",
                                    "device_fp32": "TF32 off (matmul and cuDNN)"}}
    for spec in ctx.settings.parity_nets:
        ctx.check_budget(f"before {spec.label()}")
        inputs = {f"random b{b}": random_batch(b, (spec.size, spec.size), seed=100 + b)
                  for b in ctx.settings.parity_batches}
        result = parity_for_model(ctx.net(spec), inputs, ctx.device)
        for key in ("parity", "controls"):
            out[key] += [{"model": spec.label(), **r} for r in result[key]]
        out["checks"] += [{**c, "name": f"{spec.label()}: {c['name']}"} for c in result["checks"]]
    return out
