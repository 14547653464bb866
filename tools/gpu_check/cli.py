"""``python -m tools.gpu_check``'s options and the run: sections in order, the report rewritten after each,
exit status 1 when any section failed."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from cdarts_deploy.deploy.versions import conditions

from .capabilities import probe
from .context import Context
from .plan import dry_run, sections
from .report import output_paths, write
from .settings import settings_for
from .verdicts import FAILED, Section, exit_code, run_sections

DESCRIPTION = "One-shot GPU acceptance run: every section passes, fails or is not applicable, and a skip is a failure."


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.gpu_check", description=DESCRIPTION)
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
