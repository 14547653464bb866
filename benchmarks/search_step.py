"""Seconds per search step of CDARTS vs first-order DARTS at the same search network and batch, side by side.

    .venv/bin/python benchmarks/search_step.py                      # CPU-sized default
    .venv/bin/python benchmarks/search_step.py --width 16 --cells 8 --batch 64 --device cuda   # paper size
    .venv/bin/python benchmarks/search_step.py --skip-epochs 4      # also: skip connections per epoch

Each method runs in its own child process (so peak memory is per method).  On CPU
the primary measure is process CPU time per step (stable on a shared machine,
where wall time depends on other load); wall time is printed too.  A
CDARTS step is the joint alpha + w_E update plus the w_S update; with S_E = S_U =
1 epoch, every search step also carries one stage-1 w_E step, reported as the
amortized cost.  A DARTS step is the alpha update plus the w_S update.  The paper
(Section 4.7) reports about 1.3x.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from cdarts_deploy.data.distributed import init_distributed
from search.cell_space import CellSpace
from search.config import SearchConfig, resolved_defaults
from search.data import SearchData
from search.epoch_metrics import Meter
from search.trainer import CyclicSearch

REPO = Path(__file__).resolve().parents[1]


def _worker(args: argparse.Namespace) -> dict:

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ctx = init_distributed(args.device)
    n = args.batch * (args.steps + args.warmup + 1)
    x = torch.randn(n, 3, args.input_size, args.input_size)
    y = torch.randint(0, 10, (n,))
    data = SearchData(TensorDataset(x, y), TensorDataset(x.clone(), y.clone()), 10, "cifar", args.input_size)
    cfg = resolved_defaults(SearchConfig(method=args.method, width=args.width, cells=args.cells,
                                         eval_cells=args.eval_cells, batch_size=args.batch, warmup_epochs=0,
                                         epochs=30, progress=False, channels_last=not args.contiguous), "cifar")
    space = CellSpace(cfg, 10, "cifar", args.input_size, ctx.device)
    with tempfile.TemporaryDirectory() as tmp:
        search = CyclicSearch(cfg, space, data, ctx, Path(tmp))
        meter = Meter()
        batches = [(a.to(ctx.device, memory_format=search.memory_format), b.to(ctx.device))
                   for a, b in search.train_loader]
        if args.method == "cdarts":
            search.install_branch(search.derive(), build_id=0, lr=cfg.lr)

        def sync() -> None:
            if ctx.device.type == "cuda":
                torch.cuda.synchronize()

        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        step_times, stage1_times, cpu_step, cpu_stage1 = [], [], [], []
        for i in range(args.warmup + args.steps):
            (xt, yt), (xv, yv) = batches[i], batches[i + 1]
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            if args.method == "cdarts":
                search.joint_step(xv, yv, 5.0, meter)
            else:
                search.darts_arch_step(xv, yv, meter)
            search.weight_step(xt, yt, meter)
            sync()
            t1, c1 = time.perf_counter(), time.process_time()
            if args.method == "cdarts":
                search.eval_step(xv, yv, meter)  # one stage-1 step per search step when S_E = S_U
            sync()
            t2, c2 = time.perf_counter(), time.process_time()
            if i >= args.warmup:
                step_times.append(t1 - t0)
                stage1_times.append(t2 - t1)
                cpu_step.append(c1 - c0)
                cpu_stage1.append(c2 - c1)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if ctx.device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    def median(v: list[float]) -> float:
        return sorted(v)[len(v) // 2]

    return {"method": args.method, "step_s": median(step_times),
            "step_with_stage1_s": median([a + b for a, b in zip(step_times, stage1_times)]),
            "cpu_step_s": median(cpu_step),
            "cpu_step_with_stage1_s": median([a + b for a, b in zip(cpu_step, cpu_stage1)]),
            "peak_mib": peak, "device": str(ctx.device)}


def step_times(method: str, *, width: int = 8, cells: int = 8, eval_cells: int = 20, batch: int = 16,
               input_size: int = 32, steps: int = 5, warmup: int = 2, device: str = "cpu", threads: int = 0,
               contiguous: bool = False) -> dict:
    """One method's median step times, in this process (``main`` runs each method in a child process so that
    peak memory is per method; on CUDA the peak is reset per run, so in-process is enough there)."""
    return _worker(argparse.Namespace(method=method, width=width, cells=cells, eval_cells=eval_cells, batch=batch,
                                      input_size=input_size, steps=steps, warmup=warmup, device=device,
                                      threads=threads, contiguous=contiguous))


def ratios(darts: dict, cdarts: dict) -> dict:
    """CDARTS / DARTS step ratios as ``main`` prints them (process CPU time on CPU, wall time on GPU)."""
    key = "cpu_step" if darts["device"] == "cpu" else "step"
    stage1 = cdarts[f"{key}_with_stage1_s"] - cdarts[f"{key}_s"]
    return {"measure": "process CPU time" if key == "cpu_step" else "wall time",
            "step_ratio": cdarts[f"{key}_s"] / darts[f"{key}_s"],
            "step_with_stage1_ratio": cdarts[f"{key}_with_stage1_s"] / darts[f"{key}_s"],
            # Algorithm 1 trains the evaluation network twice per search step: a floor for the ratio
            "floor_with_stage1": (darts[f"{key}_s"] + 2 * stage1) / darts[f"{key}_s"],
            "peak_memory_ratio": cdarts["peak_mib"] / darts["peak_mib"],
            "paper": "about 1.3x (Section 4.7)"}


def _skip_counts(args: argparse.Namespace) -> dict[str, list[int]]:
    """Skip connections in the normal cell after each epoch of a short CDARTS and DARTS run on the same data."""

    counts: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "cifar-10-batches-py"
        d.mkdir()
        rng = np.random.default_rng(0)
        for i in range(1, 6):
            labels = rng.integers(0, 10, 200)
            img = rng.integers(0, 90, (200, 3, 32, 32)).astype(np.uint8)
            img[np.arange(200), labels % 3] += (120 + 10 * (labels // 3)).astype(np.uint8)[:, None, None]
            with open(d / f"data_batch_{i}", "wb") as fh:
                pickle.dump({b"data": img.reshape(200, -1), b"labels": [int(v) for v in labels]}, fh)
        for method in ("cdarts", "darts"):
            out = Path(tmp) / method
            cmd = [sys.executable, "-m", "search.cli", "--preset", "cpu-smoke", "--dataset", "cifar10", "--data-root",
                   str(d), "--out", str(out), "--method", method, "--epochs", str(args.skip_epochs),
                   "--no-progress", "--threads", str(args.threads or 0), "--max-steps", str(args.skip_steps),
                   "--arch-lr", str(args.skip_arch_lr)]
            subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
            rows = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
            counts[method] = [r["skip_normal"] for r in rows if r["phase"] == "search"]
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--cells", type=int, default=8)
    p.add_argument("--eval-cells", type=int, default=20)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--contiguous", action="store_true", help="contiguous (NCHW) memory order instead of channels-last")
    p.add_argument("--skip-epochs", type=int, default=0, help="also run short searches and count skip connections")
    p.add_argument("--skip-steps", type=int, default=20, help="steps per epoch of those searches")
    p.add_argument("--skip-arch-lr", type=float, default=3e-4, help="alpha learning rate of those searches")
    p.add_argument("--skip-only", action="store_true", help="only the skip-connection runs")
    p.add_argument("--method", help=argparse.SUPPRESS)  # internal: run one method and print JSON
    args = p.parse_args()
    if args.method:
        print(json.dumps(_worker(args)))
        return
    if args.skip_only:
        for method, values in _skip_counts(args).items():
            print(f"skip connections in the normal cell per search epoch, {method}: {values}")
        return
    results = {}
    for method in ("darts", "cdarts"):
        cmd = [sys.executable, __file__, "--method", method] + [a for a in sys.argv[1:]]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        line = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
        results[method] = json.loads(line)
    d, c = results["darts"], results["cdarts"]
    print(f"search network C={args.width}, {args.cells} cells; evaluation network {args.eval_cells} cells; "
          f"batch {args.batch}, {args.input_size}x{args.input_size}, device {d['device']}, "
          f"{'contiguous' if args.contiguous else 'channels-last'}, median of {args.steps} steps")
    print(f"{'':32}{'darts':>12}{'cdarts':>12}{'ratio':>10}")
    rows = [("wall s/step (alpha + w updates)", "step_s"), ("wall s/step incl. stage 1", "step_with_stage1_s")]
    if d["device"] == "cpu":
        rows = [("CPU s/step (alpha + w updates)", "cpu_step_s"),
                ("CPU s/step incl. stage 1", "cpu_step_with_stage1_s")] + rows
    for label, key in rows:
        print(f"{label:32}{d[key]:12.3f}{c[key]:12.3f}{c[key] / d[key]:10.2f}x")
    print(f"{'peak memory MiB':32}{d['peak_mib']:12.0f}{c['peak_mib']:12.0f}{c['peak_mib'] / d['peak_mib']:10.2f}x")
    # Algorithm 1 trains the evaluation network twice per search step (in the joint step and in stage 1 when
    # S_E = S_U) on top of the two search-network updates DARTS also makes: that sets a floor for the ratio
    key = "cpu_step" if d["device"] == "cpu" else "step"
    stage1 = c[f"{key}_with_stage1_s"] - c[f"{key}_s"]
    print(f"evaluation-network step (stage 1) {stage1:.3f} s: the ratio incl. stage 1 cannot go below "
          f"(darts + 2 x stage 1) / darts = {(d[f'{key}_s'] + 2 * stage1) / d[f'{key}_s']:.2f}x at this size")
    print("paper (Section 4.7): about 1.3x")
    if args.skip_epochs:
        counts = _skip_counts(args)
        for method, values in counts.items():
            print(f"skip connections in the normal cell per search epoch, {method}: {values}")


if __name__ == "__main__":
    main()
