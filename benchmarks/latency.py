#!/usr/bin/env python
"""ONNX Runtime vs PyTorch eager latency on this CPU, side by side, against the deployment targets.

    python benchmarks/latency.py            # zoo models + timm peers, batch 1 and 32, 2 threads
    python benchmarks/latency.py --quick    # fewer models and runs, batch 1 and 8

For every model: median latency under PyTorch eager and ONNX Runtime (same
input, same thread count, exported and checked through cdarts-export's pipeline),
the ratio ORT / eager, achieved GFLOP/s and its fraction of the GEMM rate
measured in the same run.  Targets:

* ONNX Runtime at most 0.5x PyTorch eager for every zoo model;
* CDARTS-b within 1.2x of efficientnet_b0's latency at batch 32;
* DARTS-cell models at least 40% of the measured GEMM rate at batch 32.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import timm
import torch

from backbones.complexity import count_macs
from cdarts_deploy import genotype as gt
from cdarts_deploy.deploy import profiling as prof
from cdarts_deploy.deploy.gemm import measure_gemm_rate
from cdarts_deploy.deploy.model_spec import build_model, random_batch, resolve_spec
from cdarts_deploy.deploy.pipeline import OnnxExport, export_verified
from cdarts_deploy.deploy.versions import cpu_model

ROOT = Path(__file__).resolve().parents[1]

# (label, kind, name, input side): zoo models at their published input sizes, peers at 224
MODELS = (
    ("cdarts_cifar", "zoo", "cdarts_cifar", 32),
    ("darts_v2_cifar", "zoo", "darts_v2", 32),
    ("pdarts_cifar", "zoo", "pdarts", 32),
    ("pcdarts_cifar", "zoo", "pcdarts_cifar", 32),
    ("cdarts_imagenet", "zoo", "cdarts_imagenet", 224),
    ("cdarts_a", "zoo", "cdarts_a", 224),
    ("cdarts_b", "zoo", "cdarts_b", 224),
    ("efficientnet_b0", "timm", "efficientnet_b0", 224),
    ("mobilenetv3_large_100", "timm", "mobilenetv3_large_100", 224),
    ("mnasnet_100", "timm", "mnasnet_100", 224),
)
QUICK = ("cdarts_cifar", "cdarts_b", "efficientnet_b0")


def build(kind: str, name: str, side: int):

    if kind == "timm":
        model = timm.create_model(name, pretrained=False).eval()
    else:
        g = gt.load(name)
        model = build_model(g, resolve_spec(g, input_size=(side, side)))
    return model, count_macs(model, (side, side))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}; batch 1 and 8; fewer runs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", default=None, help="batch sizes (default 1,32; --quick 1,8)")
    p.add_argument("--iters", type=int, default=None, help="timed runs (default 20; --quick 5)")
    p.add_argument("--exporter", default="dynamo", choices=("dynamo", "torchscript"))
    p.add_argument("--models", default=None, help="comma list of labels to run (default: all)")
    args = p.parse_args()
    batches = [int(b) for b in (args.batch or ("1,8" if args.quick else "1,32")).split(",")]
    iters = args.iters or (5 if args.quick else 20)
    wanted = set(args.models.split(",")) if args.models else set(QUICK) if args.quick else None



    torch.set_num_threads(args.threads)
    gemm = measure_gemm_rate(threads=args.threads)
    print(f"CPU: {cpu_model()}, {args.threads} threads; measured GEMM rate {gemm.gflops:.1f} GFLOP/s "
          f"(fp32 {gemm.size}x{gemm.size}); torch {torch.__version__}; exporter {args.exporter}", flush=True)
    header = (f"{'model':24s} {'batch':>5s} {'MACs/img':>9s} {'eager ms':>9s} {'ORT ms':>9s} {'ORT/eager':>9s} "
              f"{'eager GF/s':>10s} {'ORT GF/s':>9s} {'ORT %GEMM':>9s}")
    print(header)
    print("-" * len(header), flush=True)
    results: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, kind, name, side in MODELS:
            if wanted is not None and label not in wanted:
                continue
            model, macs = build(kind, name, side)
            onnx_path = Path(tmp) / f"{label}.onnx"
            exported = export_verified(model, tmp, label, OnnxExport((1, 3, side, side), exporter=args.exporter),
                                       {"random b1": random_batch(1, (side, side))}, {"name": label})
            if not exported.passed:
                print(f"{label:24s} skipped: {exported.failures[0]}", flush=True)
                continue
            for batch in batches:
                shape = (batch, 3, side, side)
                warmup = 2 if batch > 8 else 5
                eager = prof.measure_torch(model, shape, warmup, iters).stats.median_ms
                ort = prof.measure_onnxruntime(onnx_path, shape, warmup, iters, args.threads).stats.median_ms
                flop = 2.0 * macs * batch
                row = {"eager": eager, "ort": ort, "macs": macs, "ort_gflops": flop / ort / 1e6,
                       "eager_gflops": flop / eager / 1e6}
                results[(label, batch)] = row
                print(f"{label:24s} {batch:5d} {macs / 1e6:8.0f}M {eager:9.2f} {ort:9.2f} {ort / eager:9.2f} "
                      f"{row['eager_gflops']:10.1f} {row['ort_gflops']:9.1f} {row['ort_gflops'] / gemm.gflops:9.0%}",
                      flush=True)

    print("\nTargets:")
    big = max(batches)
    zoo = [label for label, kind, _, _ in MODELS if kind == "zoo"]
    for label in zoo:
        ratios = [results[(label, b)]["ort"] / results[(label, b)]["eager"] for b in batches if (label, b) in results]
        if ratios:
            verdict = "MET" if max(ratios) <= 0.5 else "MISSED"
            print(f"  ORT <= 0.5x eager   {label:18s} worst {max(ratios):.2f}x  {verdict}")
    if ("cdarts_b", big) in results and ("efficientnet_b0", big) in results:
        r = results[("cdarts_b", big)]["ort"] / results[("efficientnet_b0", big)]["ort"]
        print(f"  CDARTS-b <= 1.2x efficientnet_b0 at batch {big} (ORT): {r:.2f}x  {'MET' if r <= 1.2 else 'MISSED'}")
    for label in zoo:
        if (label.startswith(("cdarts_cifar", "darts", "pdarts", "pcdarts", "cdarts_imagenet"))
                and (label, big) in results):
            frac = results[(label, big)]["ort_gflops"] / gemm.gflops
            print(f"  >= 40% of GEMM rate {label:18s} batch {big}: {frac:.0%}  {'MET' if frac >= 0.4 else 'MISSED'}")
    print("\nPublished, not measured: CDARTS (CIFAR) 41.2 ms at batch 32, 32x32 on an NVIDIA Tesla P100 "
          "(paper Table 4).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
