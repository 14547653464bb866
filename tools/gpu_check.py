#!/usr/bin/env python
"""One-shot GPU acceptance run: every section passes, fails or is not applicable, and a skip is a failure.

    python -m tools.gpu_check --out gpu_check/            # full run, budget 420 s (target: under 8 minutes)
    python -m tools.gpu_check --quick --out gpu_check/    # budget 150 s (target: under 3 minutes)
    python -m tools.gpu_check --dry-run                   # what would run on the GPU image and here, and why
    python -m tools.gpu_check --device cpu --out /tmp/x   # the same sections on the CPU at toy sizes

Sections (``--dry-run`` lists them with their sizes):

* ``parity``: PyTorch on the device in FP32 (TF32 off), FP16 and BF16 autocast against the CPU FP32
  model, one cell network and one chain network with calibrated BatchNorm, judged by the project's
  rule (:mod:`cdarts_deploy.deploy.parity`).  Two negative controls must fail: a copy whose stem
  weights moved by 1% under the FP32 rule, and a copy with every weight moved by 25% under the
  loosest rule.  If a control passes, the rule proves nothing and the section fails.
* ``latency_eager``, ``latency_cuda_graph``, ``latency_compile``: the zoo networks (cell
  cdarts_cifar at 32 px, chain cdarts_b and cell cdarts_imagenet at 224 px) and timm peers at
  batch 1, 8 and 32; CUDA-graph replays and compiled runs must agree with eager.
* ``search_step``: seconds per CDARTS and DARTS search step at paper size and their ratio
  (``benchmarks/search_step.py``).
* ``train_throughput``: images/s of cdarts-train's loop against a bare loop at the paper's retraining
  size (``benchmarks/train_throughput.py``).
* ``gemm``: the GEMM ceiling (FP32 with TF32 off, FP16).
* ``tensorrt``, ``onnxruntime_cuda``: engines / the CUDA provider, checked and timed, where installed.

"Not applicable" is only for what the machine lacks (no CUDA device, TensorRT not installed, an
ONNX Runtime without its CUDA provider).  A section the machine can run that was not run (time
budget spent, an exception, a hardware present but unusable) fails, and so does the whole run:
exit status 1.  The JSON and Markdown reports are rewritten after every section, so a run killed
from outside still leaves what it measured.

Run from the root of a source checkout (``python -m`` puts it on the import path; nothing needs
installing) or from an installed environment, with torch, timm, onnx and onnxruntime only; TensorRT and the
OpenMMLab packages are imported only by the sections that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import importlib.util
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]

PASSED, FAILED, NOT_APPLICABLE = "passed", "failed", "not applicable"

#: The fixed image of the GPU machines this check is written for, as ``--dry-run`` describes it.
GPU_IMAGE = {
    "name": "GPU image: torch 2.11 + CUDA 13, timm, onnx, onnxruntime (CPU build), no TensorRT",
    "capabilities": {
        "cuda": None,
        "triton": None,  # ships with the Linux CUDA wheels of torch
        "cxx": None,
        "tensorrt": "TensorRT not installed",
        "onnxruntime_cuda": "onnxruntime is the CPU build (no CUDAExecutionProvider)",
    },
}

#: BF16 keeps 8 significant bits, 3 fewer than FP16, so its rounding is 8x coarser.  Measured with
#: CPU autocast: cdarts_b at 224 px differs from FP32 by 6% of the logits' scale (FP16: 0.8%), an
#: 8-cell DARTS network by 15-18% (FP16: 2%).  The FP16 rule (0.05 + 5%) would leave no margin.
BF16_TOLERANCE = (0.1, 0.1)  # atol, rtol as in parity.TOLERANCES

#: Negative controls: relative weight noise of the stem only (judged by the FP32 rule: moves the
#: logits by 5-20% of their scale), and of every weight (judged by the loosest rule used).
STEM_PERTURBATION = 1e-2
GROSS_PERTURBATION = 0.25

#: A CUDA-graph replay runs the eager kernels: it must match eager to FP32 summation order.  A compiled
#: model fuses and reorders: it must stay within 1% of the logits' scale (a random 20-cell network's own
#: FP32-vs-FP64 error is 0.1% of it); at FP16 / BF16 the compiled agreement is reported, not judged.  These are
#: consistency checks; parity is the parity section's job.
GRAPH_RTOL, COMPILE_RTOL, CONSISTENCY_ATOL = 1e-3, 1e-2, 1e-4


class BudgetSpent(Exception):
    """The time budget ran out inside a section (it fails: it could have run)."""


# --------------------------------------------------------------------------- what this machine has


@dataclass(frozen=True)
class Capability:
    available: bool
    reason: str = ""  # why not, or what was found
    broken: bool = False  # present but unusable: sections that need it fail instead of being not applicable


def _gpu_hardware() -> str | None:
    """Evidence of an NVIDIA GPU independent of torch (device nodes, nvidia-smi), or None."""
    if Path("/dev/nvidia0").exists():
        return "/dev/nvidia0 exists"
    exe = shutil.which("nvidia-smi")
    if exe:
        import subprocess

        try:
            out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        if "GPU" in out:
            return f"nvidia-smi lists {out.strip().splitlines()[0]}"
    return None


def probe(require_gpu: bool = False) -> dict[str, Capability]:
    """The capabilities sections ask for: cuda, triton, cxx, tensorrt, onnxruntime_cuda."""
    import onnxruntime
    import torch

    caps: dict[str, Capability] = {}
    try:
        cuda = torch.cuda.is_available()
        error = ""
    except Exception as exc:  # a broken driver
        cuda, error = False, f"{type(exc).__name__}: {exc}"
    if cuda:
        caps["cuda"] = Capability(True, torch.cuda.get_device_name(0))
    else:
        hardware = _gpu_hardware()
        if hardware:
            caps["cuda"] = Capability(False, f"a GPU is present ({hardware}) but torch cannot use it "
                                             f"(torch.cuda.is_available() is False{'; ' + error if error else ''})",
                                      broken=True)
        elif require_gpu:
            caps["cuda"] = Capability(False, "no CUDA device visible to torch, and --require-gpu was given",
                                      broken=True)
        else:
            caps["cuda"] = Capability(False, "no CUDA device (torch sees none, no /dev/nvidia0, no nvidia-smi GPU)")
    caps["triton"] = (Capability(True, "triton importable") if importlib.util.find_spec("triton") else
                      Capability(False, "triton is not installed (torch.compile's CUDA backend needs it)"))
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    caps["cxx"] = (Capability(True, cxx) if cxx else
                   Capability(False, "no C++ compiler (torch.compile's CPU backend needs one)"))
    if importlib.util.find_spec("tensorrt") is None:
        caps["tensorrt"] = Capability(False, "TensorRT not installed")
    else:
        try:
            from cdarts_deploy.deploy.trt import require_tensorrt

            require_tensorrt()
            caps["tensorrt"] = Capability(True, "tensorrt importable")
        except Exception as exc:  # installed, but no GPU or a broken install
            caps["tensorrt"] = Capability(False, f"TensorRT installed but unusable: {exc}", broken=bool(cuda))
    has_provider = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    caps["onnxruntime_cuda"] = (Capability(True, "CUDAExecutionProvider") if has_provider else
                                Capability(False, "onnxruntime has no CUDAExecutionProvider (CPU build)"))
    return caps


# --------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Net:
    """One network of a section: a zoo genotype (width/cells for cell networks) or a timm model."""

    name: str
    size: int
    width: int | None = None
    cells: int | None = None
    timm: bool = False

    def label(self) -> str:
        shape = f"{self.name}@{self.size}"
        return shape + (f" (C={self.width}, {self.cells} cells)" if self.width else "")


@dataclass
class Settings:
    parity_nets: list[Net]
    parity_batches: tuple[int, ...]
    latency_nets: list[Net]
    latency_batches: tuple[int, ...]
    compile_nets: list[str]
    compile_batches: tuple[int, ...]
    warmup: int
    iters: int
    dtype: str
    search: dict
    train: dict
    gemm_sizes: tuple[int, ...]
    budget_s: float
    trt_nets: list[Net] = field(default_factory=list)


# A random 20-cell DARTS network is chaotic: FP16 rounding alone moves its logits by 150% of their scale, so
# no reduced-precision rule can pass or fail meaningfully on it; parity uses the 8-cell search-size network.
PARITY_CELL = Net("cdarts_cifar", 32, width=16, cells=8)
PARITY_CHAIN = Net("cdarts_b", 224)
ZOO_LATENCY = [Net("cdarts_cifar", 32), Net("cdarts_b", 224), Net("cdarts_imagenet", 224)]
TIMM_PEERS = [Net("efficientnet_b0", 224, timm=True), Net("mobilenetv3_large_100", 224, timm=True),
              Net("resnet50", 224, timm=True)]


def settings_for(device: str, quick: bool, dtype: str = "fp32") -> Settings:
    """Sizes and budget: paper sizes on a GPU (fewer iterations with ``quick``), toy sizes on the CPU."""
    if device == "cpu":  # a check of the check: every section's code path, at sizes two shared cores manage
        tiny = Net("cdarts_cifar", 32, width=8, cells=5)
        return Settings([tiny], (1, 2), [tiny], (1, 2), ["cdarts_cifar"], (1, 2), 1, 3, dtype,
                        search=dict(width=4, cells=3, eval_cells=3, batch=4, input_size=16, steps=2, warmup=1,
                                    threads=1),
                        train=dict(genotype="cdarts_cifar", width=4, cells=3, size=16, batch=4, steps=2, rounds=1,
                                   aux_weight=0.4, threads=1, channels_last=False, amp="off"),
                        gemm_sizes=(256,), budget_s=900, trt_nets=[tiny])
    # paper sizes: search network C=16, 8 cells, evaluation network 20 cells, batch 64 (Table 1);
    # retraining C=36, 20 cells, batch 96, channels-last, BF16 autocast
    search = dict(width=16, cells=8, eval_cells=20, batch=64, input_size=32, steps=3 if quick else 5,
                  warmup=1 if quick else 2, threads=0)
    train = dict(genotype="cdarts_cifar", width=36, cells=20, size=32, batch=96, steps=4 if quick else 8,
                 rounds=1 if quick else 3, aux_weight=0.4, threads=None, channels_last=True, amp="bf16")
    return Settings(
        parity_nets=[PARITY_CELL, PARITY_CHAIN], parity_batches=(1, 8),
        latency_nets=ZOO_LATENCY + TIMM_PEERS, latency_batches=(1, 8, 32),
        # a compiled model costs two compilations at batches 1, 8, 32 (batch 1, then one dynamic-batch graph
        # for 8 and 32), one at a single batch
        compile_nets=["cdarts_b"] if quick else ["cdarts_cifar", "cdarts_b", "resnet50"],
        compile_batches=(32,) if quick else (1, 8, 32),
        warmup=5 if quick else 10, iters=30 if quick else 100, dtype=dtype, search=search, train=train,
        gemm_sizes=(4096,) if quick else (4096, 8192), budget_s=150 if quick else 420,
        trt_nets=[PARITY_CELL, PARITY_CHAIN])  # the 8-cell network: see PARITY_CELL


# --------------------------------------------------------------------------- the run


class Context:
    """What sections share: device, sizes, capabilities, the deadline, built networks, scratch folder."""

    def __init__(self, device: str, settings: Settings, caps: Mapping[str, Capability], work: Path,
                 deadline: float | None = None) -> None:
        self.device, self.settings, self.caps, self.work = device, settings, dict(caps), work
        self.deadline = deadline if deadline is not None else time.monotonic() + settings.budget_s
        self._nets: dict[Net, Any] = {}
        self.onnx: dict[Net, dict] = {}

    def check_budget(self, progress: str) -> None:
        if time.monotonic() > self.deadline:
            raise BudgetSpent(f"the time budget ran out inside the section ({progress})")

    def net(self, spec: Net) -> Any:
        """The CPU FP32 model with calibrated BatchNorm (built once; callers copy it before moving it)."""
        if spec not in self._nets:
            self._nets[spec] = build_net(spec)
        return self._nets[spec]


def build_net(spec: Net) -> Any:
    """A zoo or timm network in eval mode with calibrated BatchNorm (random weights otherwise give logits that
    hardly depend on the input, and every comparison would pass)."""
    from cdarts_deploy.deploy import model_spec as ms

    if spec.timm:
        import timm

        model = timm.create_model(spec.name, pretrained=False).eval()
    else:
        from cdarts_deploy import genotype as gt

        genotype = gt.load(spec.name)
        is_cell = isinstance(genotype, gt.CellGenotype)
        net_spec = ms.resolve_spec(genotype, width=spec.width if is_cell else None,
                                   cells=spec.cells if is_cell else None, num_classes=None,
                                   input_size=(spec.size, spec.size))
        model = ms.build_model(genotype, net_spec)
    ms.calibrate_batchnorm(model, (spec.size, spec.size))
    return model


@dataclass
class Section:
    key: str
    title: str
    needs: Mapping[str, tuple[str, ...]]  # device -> capabilities it needs there
    run: Callable[[Context], dict]
    scope: Callable[[Settings, str], str]  # what it runs, for --dry-run


def applicability(section: Section, device: str, caps: Mapping[str, Capability | None]) -> tuple[str, str]:
    """("run", what) or (NOT_APPLICABLE, why) or (FAILED, why) for a capability present but unusable."""
    reasons, broken = [], []
    for need in section.needs.get(device, ()):
        cap = caps.get(need)
        if cap is None or cap.available:
            continue
        (broken if cap.broken else reasons).append(cap.reason)
    if broken:
        return FAILED, "; ".join(broken)
    if reasons:
        return NOT_APPLICABLE, "; ".join(reasons)
    return "run", ""


def judge(value: Any) -> tuple[str, str]:
    """A section's own verdict: every check it recorded passed (and it recorded at least one)."""
    checks = value.get("checks", []) if isinstance(value, dict) else []
    if not checks:
        return FAILED, "the section recorded no check"
    failed = [c for c in checks if not c.get("passed")]
    if failed:
        return FAILED, "; ".join(f"{c['name']}: {c.get('detail', 'failed')}" for c in failed)
    return PASSED, f"{len(checks)} check(s) passed"


def run_sections(sections: Sequence[Section], ctx: Context, on_update: Callable[[dict], None] = lambda s: None,
                 ) -> dict[str, dict]:
    """Run every applicable section in order; record passed / failed / not applicable with the reason."""
    from tqdm import tqdm

    results: dict[str, dict] = {}
    bar = tqdm(sections, desc="gpu_check", unit="section", file=sys.stderr, leave=False, disable=None)
    for section in bar:
        bar.set_postfix_str(section.key)
        state, why = applicability(section, ctx.device, ctx.caps)
        start = time.monotonic()
        entry: dict[str, Any] = {"title": section.title, "scope": section.scope(ctx.settings, ctx.device)}
        if state != "run":
            entry.update(status=state, reason=why)
        elif time.monotonic() > ctx.deadline:
            entry.update(status=FAILED, reason=f"not run: the time budget ({ctx.settings.budget_s:.0f} s) was spent "
                                               "before it started, and this machine can run it")
        else:
            try:
                value = section.run(ctx)
                entry.update(value)
                entry["status"], entry["reason"] = judge(value)
            except BudgetSpent as exc:
                entry.update(status=FAILED, reason=f"not finished: {exc}; this machine can run it")
            except Exception as exc:  # record and carry on: one broken runtime must not hide the others
                entry.update(status=FAILED, reason=f"{type(exc).__name__}: {exc}",
                             traceback=traceback.format_exc(limit=6))
        entry["seconds"] = round(time.monotonic() - start, 2)
        results[section.key] = entry
        tqdm.write(f"[gpu_check] {section.key}: {entry['status']} - {entry['reason']} ({entry['seconds']} s)",
                   file=sys.stderr)
        on_update(results)
    bar.close()
    return results


def exit_code(results: Mapping[str, dict]) -> int:
    """1 when any section failed (a runnable section that was skipped counts as failed), else 0."""
    return 1 if any(r["status"] == FAILED for r in results.values()) else 0


# --------------------------------------------------------------------------- parity


def device_runner(model: Any, device: str, precision: str) -> Callable[[Any], list]:
    """Run a private copy of ``model`` on ``device``: FP32 with TF32 off, or FP16 / BF16 autocast."""
    import torch

    from cdarts_deploy.deploy.profiling import fp32_math

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
    from cdarts_deploy.deploy import parity

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
    import torch

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
    from cdarts_deploy.deploy import parity

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
    from cdarts_deploy.deploy.model_spec import random_batch

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


# --------------------------------------------------------------------------- latency


def _dtype(name: str) -> Any:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def _timer(device: str) -> Callable[[Callable[[], Any], int, int], list[float]]:
    from cdarts_deploy.deploy.timing import time_cuda, time_host

    if device.startswith("cuda"):
        return lambda step, warmup, iters: time_cuda(step, warmup, iters)
    return lambda step, warmup, iters: time_host(step, warmup, iters)


def agreement(reference: Any, candidate: Any, rtol: float) -> dict:
    """Largest |candidate - reference| against ``CONSISTENCY_ATOL + rtol * max|reference|``."""
    ref, cand = reference.float(), candidate.float()
    max_abs = float((cand - ref).abs().max())
    scale = float(ref.abs().max())
    return {"max_abs": max_abs, "scale": scale, "allowed": CONSISTENCY_ATOL + rtol * scale,
            "passed": bool(max_abs <= CONSISTENCY_ATOL + rtol * scale)}


def conditions_row(settings: Settings) -> dict:
    """What changes a latency row, read inside the timed block (so TF32 shows as the row ran)."""
    import torch

    return {"dtype": settings.dtype, "warmup": settings.warmup, "iters": settings.iters,
            "cudnn_benchmark": torch.backends.cudnn.benchmark, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32, "memory_format": "contiguous"}


def latency_section(ctx: Context, mode: str) -> dict:
    """Eager, CUDA-graph replay or torch.compile latency of every latency network at every batch."""
    import torch

    from cdarts_deploy.deploy.profiling import fp32_math
    from cdarts_deploy.deploy.timing import summarize

    s, device = ctx.settings, ctx.device
    nets = s.latency_nets if mode != "compile" else [n for n in s.latency_nets if n.name in s.compile_nets]
    batches = s.latency_batches if mode != "compile" else s.compile_batches
    timer = _timer(device)
    rows: list[dict] = []
    problems: list[str] = []
    total = len(nets) * len(batches)
    for spec in nets:
        model = copy.deepcopy(ctx.net(spec)).to(device=device, dtype=_dtype(s.dtype)).eval()
        # one compiled object per model: batch 1 compiles a static graph, batch 8 one dynamic-batch graph
        # that batch 32 reuses (torch's automatic dynamic shapes)
        compiled = torch.compile(model) if mode == "compile" else None
        for batch in batches:
            ctx.check_budget(f"{len(rows)} of {total} rows measured")
            x = torch.randn(batch, 3, spec.size, spec.size, device=device, dtype=_dtype(s.dtype))
            row: dict[str, Any] = {"model": spec.label(), "mode": mode, "batch": batch, "device": device}
            with fp32_math(device, s.dtype), torch.no_grad():
                row.update(conditions_row(s))
                eager_out = model(x).clone()
                if mode == "eager":
                    step = functools.partial(model, x)  # bound now: x and model are deleted after the row
                elif mode == "cuda_graph":
                    step, graph_out = capture_graph(model, x)
                    step()
                    torch.cuda.synchronize()
                    row["agrees_with_eager"] = agreement(eager_out, graph_out, GRAPH_RTOL)
                else:
                    start = time.perf_counter()
                    out = compiled(x)  # compiles here, untimed
                    if device.startswith("cuda"):
                        torch.cuda.synchronize()
                    row["compile_s"] = round(time.perf_counter() - start, 2)
                    row["agrees_with_eager"] = agreement(eager_out, out, COMPILE_RTOL)
                    if s.dtype != "fp32":  # half-precision rounding, reordered and amplified, is not a bug: report only
                        row["agrees_with_eager"]["passed"] = None
                    step = functools.partial(compiled, x)
                warmup = s.warmup if mode != "compile" else max(s.warmup, 3)
                times = timer(step, warmup, s.iters)
            row["stats"] = summarize(times, batch, warmup).as_dict()
            row["timed_region"] = ("forward only, input resident on the device; "
                                   + ("CUDA events" if device.startswith("cuda") else "perf_counter"))
            if not all(math.isfinite(t) and t > 0 for t in times):
                problems.append(f"{spec.label()} b{batch}: non-positive or non-finite time")
            if row.get("agrees_with_eager", {}).get("passed") is False:
                a = row["agrees_with_eager"]
                problems.append(f"{spec.label()} b{batch}: differs from eager by {a['max_abs']:.3g} "
                                f"(allowed {a['allowed']:.3g})")
            rows.append(row)
            del x
        del model, compiled
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    checks = [{"name": f"all {total} rows measured", "passed": len(rows) == total and total > 0,
               "detail": f"{len(rows)} of {total}"},
              {"name": "finite latencies" + ("" if mode == "eager" else ", outputs agree with eager"),
               "passed": not problems, "detail": "; ".join(problems[:4]) or "all rows"}]
    if mode == "compile":
        torch._dynamo.reset()  # release the compiled graphs before the next section
    return {"latency": rows, "checks": checks}


def capture_graph(model: Any, x: Any) -> tuple[Callable[[], Any], Any]:
    """Capture one forward pass of ``model`` on the static input ``x`` in a CUDA graph; (replay, output)."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as capture requires
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = model(x)
    return graph.replay, out


# --------------------------------------------------------------------------- search, training, GEMM


def load_benchmark(name: str) -> Any:
    """A script of ``benchmarks/`` as a module (it is not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def search_step_section(ctx: Context) -> dict:
    from cdarts_deploy.deploy.gemm import torch_threads

    bench = load_benchmark("search_step")
    times = {}
    for method in ("darts", "cdarts"):
        ctx.check_budget(f"before {method}")
        with torch_threads(None):  # the benchmark sets the thread count; restored after
            times[method] = bench.step_times(method, device=ctx.device, **ctx.settings.search)
        if ctx.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
    ratios = bench.ratios(times["darts"], times["cdarts"])
    values = [v for t in times.values() for k, v in t.items() if k.endswith("_s")] + \
        [ratios["step_ratio"], ratios["step_with_stage1_ratio"]]
    on_device = all(t["device"].startswith(ctx.device) for t in times.values())
    return {"search_step": {"settings": ctx.settings.search, "darts": times["darts"], "cdarts": times["cdarts"],
                            "ratios": ratios},
            "checks": [{"name": f"both methods ran on {ctx.device}", "passed": on_device,
                        "detail": ", ".join(t["device"] for t in times.values())},
                       {"name": "finite positive step times and ratios",
                        "passed": all(math.isfinite(v) and v > 0 for v in values),
                        "detail": f"CDARTS/DARTS {ratios['step_with_stage1_ratio']:.2f}x with stage 1 "
                                  f"({ratios['measure']}); paper {ratios['paper']}"}]}


def train_section(ctx: Context) -> dict:
    from cdarts_deploy.deploy.gemm import torch_threads

    bench = load_benchmark("train_throughput")
    with torch_threads(None):  # the benchmark sets the thread count; restored after
        result = bench.measure(device=ctx.device, **ctx.settings.train)
    values = [result["images_per_s_cdarts_train"], result["images_per_s_bare"], result["ratio"]]
    return {"train_throughput": result,
            "checks": [{"name": f"ran on {ctx.device}", "passed": result["device"].startswith(ctx.device),
                        "detail": result["device"]},
                       {"name": "finite positive throughput", "passed": all(math.isfinite(v) and v > 0 for v in values),
                        "detail": f"{result['images_per_s_cdarts_train']:.0f} images/s, "
                                  f"{result['ratio']:.3f} of the bare loop"}]}


def gemm_section(ctx: Context) -> dict:
    from cdarts_deploy.deploy.gemm import measure_gemm_rate
    from cdarts_deploy.deploy.profiling import fp32_math

    rates = {}
    with fp32_math(ctx.device, "fp32"):  # FP32 means FP32 arithmetic: TF32 off
        rates["fp32_tf32_off"] = measure_gemm_rate(sizes=ctx.settings.gemm_sizes, device=ctx.device,
                                                   runtimes=("torch",)).as_dict()
    if ctx.device.startswith("cuda"):
        rates["fp16"] = measure_gemm_rate(sizes=ctx.settings.gemm_sizes, device=ctx.device, dtype="float16",
                                          runtimes=("torch",)).as_dict()
    return {"gemm": rates, "checks": [{"name": "finite positive GEMM rates",
                                       "passed": all(math.isfinite(r["gflops"]) and r["gflops"] > 0
                                                     for r in rates.values()),
                                       "detail": ", ".join(f"{k} {r['gflops']:.0f} GFLOP/s"
                                                           for k, r in rates.items())}]}


# --------------------------------------------------------------------------- TensorRT and ONNX Runtime CUDA


def exported(ctx: Context, spec: Net, batches: Sequence[int]) -> dict:
    """FP32 ONNX of ``spec`` through the verified pipeline (CPU parity at every batch), FP16 and TensorRT INT8
    files beside it; made once per network for the sections that need a file."""
    if spec in ctx.onnx:
        return ctx.onnx[spec]
    from cdarts_deploy.deploy import precision as pr
    from cdarts_deploy.deploy.model_spec import random_batch
    from cdarts_deploy.deploy.pipeline import OnnxExport, export_verified

    hw = (spec.size, spec.size)
    name = spec.name
    inputs = {f"random b{b}": random_batch(b, hw, seed=100 + b) for b in batches}
    result = export_verified(ctx.net(spec), ctx.work, name, OnnxExport((1, 3, *hw), exporter="torchscript"), inputs,
                             {"name": name})
    if not result.passed:
        raise RuntimeError(result.failures[0])
    fp32 = ctx.work / f"{name}.onnx"
    files = {"fp32": fp32, "fp16": ctx.work / f"{name}.fp16.onnx", "int8": ctx.work / f"{name}.int8.qdq.onnx"}
    pr.to_fp16(fp32, files["fp16"])
    pr.quantize_int8(fp32, files["int8"], random_batch(32, hw, seed=7), target="tensorrt")  # explicit Q/DQ
    ctx.onnx[spec] = {"files": files, "inputs": inputs}
    return ctx.onnx[spec]


def gpu_reference(ctx: Context, spec: Net, inputs: Mapping[str, Any]) -> Any:
    """PyTorch FP32 on the GPU (TF32 off) as the reference of GPU runtimes: host batches in, host outputs out."""
    import torch

    from cdarts_deploy.deploy import parity
    from cdarts_deploy.deploy.profiling import fp32_math

    class OnDevice(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            p = next(self.inner.parameters())
            with fp32_math(ctx.device, "fp32"):
                return self.inner(x.to(device=p.device, dtype=p.dtype))

    return parity.TorchReference(OnDevice(copy.deepcopy(ctx.net(spec)).to(ctx.device)).eval(), inputs)


def tensorrt_section(ctx: Context) -> dict:
    from cdarts_deploy.deploy import profiling as prof
    from cdarts_deploy.deploy.parity import compare_runtime
    from cdarts_deploy.deploy.trt import TensorRTRunner, build_engine

    s = ctx.settings
    rows, timings, bad = [], [], []
    for spec in s.trt_nets:
        made = exported(ctx, spec, s.parity_batches)
        reference = gpu_reference(ctx, spec, made["inputs"])
        for precision in ("fp32", "fp16", "int8"):
            ctx.check_budget(f"{spec.label()} {precision}")
            engine = ctx.work / f"{spec.name}.{precision}.engine"
            build_engine(made["files"][precision], engine, (spec.size, spec.size), precision, min_batch=1,
                         opt_batch=max(s.latency_batches), max_batch=max(s.latency_batches))
            runner = TensorRTRunner(engine)
            found = compare_runtime(reference, runner.run, runner.output_names, precision, "tensorrt")
            rows += [{"model": spec.label(), **r} for r in found]
            bad += [r for r in found if r["passed"] is False]
            for batch in s.latency_batches:
                for graph in (False, True):
                    m = prof.measure_tensorrt(engine, (batch, 3, spec.size, spec.size), s.warmup, s.iters, precision,
                                              cuda_graph=graph)
                    timings.append({"model": spec.label(), "precision": precision, "batch": batch, "cuda_graph": graph,
                                    "stats": m.stats.as_dict(), "details": m.details})
    return {"parity": rows, "tensorrt_latency": timings,
            "checks": [{"name": "every engine within its precision's tolerance", "passed": not bad and bool(rows),
                        "detail": f"{len(bad)} of {len(rows)} rows failed"}]}


def onnxruntime_cuda_section(ctx: Context) -> dict:
    from cdarts_deploy.deploy import ort
    from cdarts_deploy.deploy import profiling as prof
    from cdarts_deploy.deploy.parity import compare_runtime

    s = ctx.settings
    rows, timings = [], []
    for spec in s.trt_nets:
        made = exported(ctx, spec, s.parity_batches)
        session = ort.session(made["files"]["fp32"], None, "cuda")
        found = compare_runtime(gpu_reference(ctx, spec, made["inputs"]), lambda b: ort.run(session, b),
                                ort.output_names(session), "fp32", "onnxruntime-cuda")
        rows += [{"model": spec.label(), **r} for r in found]
        for batch in s.latency_batches:
            ctx.check_budget(f"{spec.label()} b{batch}")
            m = prof.measure_onnxruntime(made["files"]["fp32"], (batch, 3, spec.size, spec.size), s.warmup, s.iters,
                                         None, "cuda")
            timings.append({"model": spec.label(), "batch": batch, "stats": m.stats.as_dict()})
    bad = [r for r in rows if r["passed"] is False]
    return {"parity": rows, "onnxruntime_cuda_latency": timings,
            "checks": [{"name": "ONNX Runtime CUDA within the fp32 tolerance", "passed": not bad and bool(rows),
                        "detail": f"{len(bad)} of {len(rows)} rows failed"}]}


# --------------------------------------------------------------------------- the plan


def _nets(nets: Sequence[Net]) -> str:
    return ", ".join(n.label() for n in nets)


def sections() -> list[Section]:
    """Every section in the order it runs (cheap and decisive first, torch.compile late)."""
    gpu = ("cuda",)
    return [
        Section("parity", "PyTorch on the device (FP32 TF32 off, FP16 and BF16 autocast) against CPU FP32, with "
                "negative controls", {"cuda": gpu, "cpu": ()}, parity_section,
                lambda s, d: f"{_nets(s.parity_nets)}; batches {list(s.parity_batches)}; controls: stem x(1+"
                             f"{STEM_PERTURBATION:g}N) under fp32, all weights x(1+{GROSS_PERTURBATION:g}N) "
                             "under bf16"),
        Section("latency_eager", "eager latency", {"cuda": gpu, "cpu": ()},
                lambda c: latency_section(c, "eager"),
                lambda s, d: f"{_nets(s.latency_nets)}; batches {list(s.latency_batches)}; {s.dtype}; "
                             f"{s.warmup} warm-up + {s.iters} timed"),
        Section("latency_cuda_graph", "CUDA-graph replay latency (must match eager)", {"cuda": gpu, "cpu": gpu},
                lambda c: latency_section(c, "cuda_graph"),
                lambda s, d: f"{_nets(s.latency_nets)}; batches {list(s.latency_batches)}; manual capture"),
        Section("search_step", "CDARTS / DARTS search-step ratio", {"cuda": gpu, "cpu": ()}, search_step_section,
                lambda s, d: "C={width}, {cells} cells, evaluation network {eval_cells} cells, batch {batch}, "
                             "{input_size} px, {steps} steps after {warmup}".format(**s.search)),
        Section("train_throughput", "retraining images/s, cdarts-train against a bare loop",
                {"cuda": gpu, "cpu": ()}, train_section,
                lambda s, d: "{genotype} C={width}, {cells} cells, batch {batch}, {size} px, amp {amp}, "
                             "channels-last {channels_last}, {rounds} x {steps} steps".format(**s.train)),
        Section("gemm", "GEMM ceiling", {"cuda": gpu, "cpu": ()}, gemm_section,
                lambda s, d: f"sizes {list(s.gemm_sizes)}; fp32 (TF32 off)" + (", fp16" if d == "cuda" else "")),
        Section("latency_compile", "torch.compile latency (must agree with eager)",
                {"cuda": ("cuda", "triton"), "cpu": ("cxx",)}, lambda c: latency_section(c, "compile"),
                lambda s, d: f"{', '.join(s.compile_nets)}; batches {list(s.compile_batches)} "
                             f"({'two compilations' if len(s.compile_batches) > 1 else 'one compilation'} per model)"),
        Section("tensorrt", "TensorRT FP32/FP16/INT8 engines: parity against PyTorch FP32 on the GPU, timing",
                {"cuda": ("cuda", "tensorrt"), "cpu": ("cuda", "tensorrt")}, tensorrt_section,
                lambda s, d: f"{_nets(s.trt_nets)}; batches {list(s.latency_batches)}, with and without CUDA graph"),
        Section("onnxruntime_cuda", "ONNX Runtime CUDA provider: parity and timing",
                {"cuda": ("cuda", "onnxruntime_cuda"), "cpu": ("cuda", "onnxruntime_cuda")}, onnxruntime_cuda_section,
                lambda s, d: f"{_nets(s.trt_nets)}; batches {list(s.latency_batches)}"),
    ]


def dry_run(device: str, quick: bool, dtype: str, caps: Mapping[str, Capability]) -> str:
    """Each section, what it would run, and whether it would run on the GPU image and on this machine."""
    image_caps = {k: Capability(v is None, v or "") for k, v in GPU_IMAGE["capabilities"].items()}
    gpu_settings = settings_for("cuda", quick, dtype)
    here = settings_for(device, quick, dtype)
    lines = [f"gpu_check --dry-run ({'quick' if quick else 'full'}; nothing is run)", "",
             f"A = {GPU_IMAGE['name']}, --device cuda, budget {gpu_settings.budget_s:.0f} s",
             f"B = this machine, --device {device} "
             f"(CUDA: {caps['cuda'].reason}; TensorRT: {caps['tensorrt'].reason}; "
             f"ONNX Runtime: {caps['onnxruntime_cuda'].reason}), budget {here.budget_s:.0f} s", ""]
    for section in sections():
        a_state, a_why = applicability(section, "cuda", image_caps)
        b_state, b_why = applicability(section, device, caps)
        lines += [f"{section.key}: {section.title}",
                  f"  A: {'runs' if a_state == 'run' else a_state + ': ' + a_why} - "
                  f"{section.scope(gpu_settings, 'cuda')}",
                  f"  B: {'runs' if b_state == 'run' else b_state + ': ' + b_why}"
                  + (f" - {section.scope(here, device)}" if b_state == "run" else "")]
    lines += ["", "A section that can run and does not (budget spent, exception) fails the run (exit 1); "
                  "'not applicable' is only for what the machine lacks."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the report


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def markdown(report: dict) -> str:
    res = report["sections"]
    counts = {s: sum(r["status"] == s for r in res.values()) for s in (PASSED, FAILED, NOT_APPLICABLE)}
    cond = report.get("conditions", {})
    lines = ["# GPU check", "",
             f"**{'FAILED' if counts[FAILED] else 'PASSED'}**: {counts[PASSED]} passed, {counts[FAILED]} failed, "
             f"{counts[NOT_APPLICABLE]} not applicable ({report['mode']}, device {report['device']}, "
             f"{report.get('seconds', 0):.0f} s of a {report['budget_s']:.0f} s budget).", "",
             f"GPU: {cond.get('gpu') or 'none'}; torch {cond.get('versions', {}).get('torch')}, CUDA "
             f"{report.get('torch_cuda')}, cuDNN {report.get('cudnn')}; nvidia-smi: {cond.get('nvidia_smi')}.", "",
             "| section | status | reason | s |", "|---|---|---|---:|"]
    for key, r in res.items():
        lines.append(f"| {key} | {r['status']} | {str(r['reason']).replace('|', '/')} | {r['seconds']} |")
    parity_rows = [(k, row) for k, r in res.items() for row in r.get("parity", []) + r.get("controls", [])]
    if parity_rows:
        lines += ["", "## Parity (against PyTorch FP32 on the CPU; controls must fail)", "",
                  "| section | model | runtime | precision | input | max abs | allowed by | other input | passed |",
                  "|---|---|---|---|---|---:|---|---:|---|"]
        for key, row in parity_rows:
            lines.append(f"| {key} | {row.get('model')} | {row['runtime']} | {row['precision']} | {row['input']} | "
                         f"{_fmt(row.get('max_abs'), '.3g')} | noise {_fmt(row.get('torch_fp32_noise'), '.2g')} | "
                         f"{_fmt(row.get('other_input_max_abs'), '.3g')} | {row['passed']} |")
    lat = [row for r in res.values() for row in r.get("latency", [])]
    if lat:
        lines += ["", "## Latency (ms; CUDA events on the GPU)", "",
                  "| model | mode | batch | dtype | median | mean | p90 | p99 | img/s | compile s | agrees |",
                  "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
        for row in lat:
            st = row["stats"]
            p = lambda k: "-" if k in st["unsupported_percentiles"] else f"{st[k + '_ms']:.3f}"  # noqa: E731
            agrees = row.get("agrees_with_eager", {}).get("passed", "-")
            lines.append(f"| {row['model']} | {row['mode']} | {row['batch']} | {row['dtype']} | "
                         f"{st['median_ms']:.3f} | {st['mean_ms']:.3f} | {p('p90')} | {p('p99')} | "
                         f"{st['throughput_ips']:.1f} | {_fmt(row.get('compile_s'), '.1f')} | {agrees} |")
        first = lat[0]
        lines += ["", f"Conditions: warm-up {first['warmup']}, {first['iters']} timed runs, cudnn.benchmark "
                      f"{first['cudnn_benchmark']}, TF32 matmul {first['tf32_matmul']}, TF32 cuDNN "
                      f"{first['tf32_cudnn']}, {first['memory_format']}."]
    if "search_step" in res.get("search_step", {}):
        r = res["search_step"]["search_step"]["ratios"]
        lines += ["", f"Search step: CDARTS / DARTS {r['step_ratio']:.2f}x (alpha + w updates), "
                      f"{r['step_with_stage1_ratio']:.2f}x with stage 1 (floor {r['floor_with_stage1']:.2f}x), "
                      f"{r['measure']}; paper {r['paper']}."]
    if "train_throughput" in res.get("train_throughput", {}):
        t = res["train_throughput"]["train_throughput"]
        lines += ["", f"Retraining: {t['images_per_s_cdarts_train']:.0f} images/s with cdarts-train's loop, "
                      f"{t['images_per_s_bare']:.0f} bare ({t['ratio']:.3f})."]
    pub = report["published_reference"]
    lines += ["", f"Published reference (not measured): {pub['model']}, {pub['latency_ms']} ms at batch "
                  f"{pub['batch']}, {pub['input']}, {pub['device']} ({pub['source']}).", ""]
    return "\n".join(lines)


def output_paths(out: str) -> tuple[Path, Path]:
    """``--out x.json`` writes x.json and x.md; any other path is a folder for gpu_check.json / .md."""
    path = Path(out)
    if path.suffix == ".json":
        return path, path.with_suffix(".md")
    return path / "gpu_check.json", path / "gpu_check.md"


def write(report: dict, out: str) -> list[Path]:
    from cdarts_deploy.atomic_files import write_text

    json_path, md_path = output_paths(out)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_text(json_path, json.dumps(report, indent=2, default=str) + "\n")
    write_text(md_path, markdown(report))
    return [json_path, md_path]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu_check", help="folder for gpu_check.json and gpu_check.md (or a .json path)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cuda (default; CUDA sections are not applicable without a GPU) or cpu (toy sizes)")
    p.add_argument("--quick", action="store_true", help="fewer iterations and compiled models: under 3 minutes")
    p.add_argument("--dry-run", action="store_true", help="list the sections and why each would run or not")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32",
                   help="latency sections' dtype (default fp32, TF32 off)")
    p.add_argument("--compile-models", help="comma list of latency networks to compile (default: per mode)")
    p.add_argument("--budget-s", type=float, help="time budget; a section not started or not finished by then fails "
                   "(default 420, quick 150; a section overrunning it is stopped at its next row)")
    p.add_argument("--require-gpu", action="store_true", help="no CUDA device is a failure, not 'not applicable'")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None, plan: Sequence[Section] | None = None) -> int:
    args = parse_args(argv)
    caps = probe(args.require_gpu)
    if args.dry_run:
        sys.stdout.write(dry_run(args.device, args.quick, args.dtype, caps))
        return 0
    import torch

    from cdarts_deploy.deploy.versions import conditions

    settings = settings_for(args.device, args.quick, args.dtype)
    if args.compile_models:
        settings.compile_nets = [n.strip() for n in args.compile_models.split(",") if n.strip()]
        known = {n.name for n in settings.latency_nets}
        unknown = sorted(set(settings.compile_nets) - known)
        if unknown:
            print(f"gpu_check: error: --compile-models {', '.join(unknown)}: not a latency network "
                  f"({', '.join(sorted(known))})", file=sys.stderr)
            return 2
    if args.budget_s is not None:
        settings.budget_s = args.budget_s
    cuda = caps["cuda"].available
    if cuda:
        torch.backends.cudnn.benchmark = False  # no per-shape autotuning inside the budget; recorded per row
    start = time.monotonic()
    report: dict[str, Any] = {
        "format": "cdarts-gpu-check", "version": 3, "mode": "quick" if args.quick else "full", "device": args.device,
        "budget_s": settings.budget_s, "capabilities": {k: vars(v) for k, v in caps.items()},
        "conditions": conditions(None, "cuda" if cuda and args.device == "cuda" else "cpu"),
        "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
        "published_reference": {"model": "CDARTS (CIFAR network)", "latency_ms": 41.2, "batch": 32, "input": "32x32",
                                "device": "NVIDIA Tesla P100",
                                "source": "CDARTS paper Table 4 (published, not measured)"},
        "sections": {},
    }

    def update(results: dict) -> None:
        report["sections"] = results
        report["seconds"] = round(time.monotonic() - start, 1)
        write(report, args.out)

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        ctx = Context(args.device, settings, caps, Path(tmp), deadline=start + settings.budget_s)
        results = run_sections(plan if plan is not None else sections(), ctx, update)
    update(results)
    code = exit_code(results)
    files = output_paths(args.out)
    for key, r in results.items():
        if r["status"] == FAILED:
            print(f"[gpu_check] failed: {key}: {r['reason']}", file=sys.stderr)
    print(f"[gpu_check] {'FAILED' if code else 'PASSED'}; wrote {files[0]} and {files[1]}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
