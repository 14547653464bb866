"""Seconds per chain-search step on this machine, and derived-child cost versus a budget.

    .venv/bin/python benchmarks/chain_search_step.py [--preset smoke64] [--steps 3] [--budget-fraction 0.5]

A step is what the search loop (``search.trainer``, chain space) does after warm-up: the joint
update (architecture weights and the evaluation network on a val batch, with distillation and the
budget term) plus the w_S update on a train batch.  Building the evaluation network is timed separately.
Inputs are random tensors of the preset's size; nothing is read from disk.  Prints the machine's load
average, because shared CPUs distort the numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from backbones.complexity import count_macs
from backbones.factory import create_model_from_genotype
from cdarts_deploy.data.distributed import DistContext
from search.chain_space import ChainSpace
from search.cli import build_parser, resolve_config
from search.data import SearchData
from search.epoch_metrics import Meter
from search.trainer import CyclicSearch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="smoke64", choices=("smoke32", "smoke64"))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--budget-fraction", type=float, default=0.5,
                   help="budget between the cheapest (0) and dearest (1) child")
    args = p.parse_args()
    cfg, _ = resolve_config(build_parser().parse_args(["--preset", args.preset, "--out", "unused"]))
    torch.manual_seed(0)
    probe = ChainSpace(cfg, args.classes, cfg.input_size, torch.device("cpu"))
    lo, hi = probe.cost.range()
    cfg = dataclasses.replace(cfg, budget=lo + args.budget_fraction * (hi - lo), progress=False)
    g = torch.Generator().manual_seed(0)
    n = cfg.batch_size * 2
    x = torch.randn(n, 3, cfg.input_size, cfg.input_size, generator=g)
    y = torch.randint(0, args.classes, (n,), generator=g)
    data = SearchData(TensorDataset(x, y), TensorDataset(x.clone(), y.clone()), args.classes, "imagenet",
                      cfg.input_size)
    torch.manual_seed(0)
    space = ChainSpace(cfg, args.classes, cfg.input_size, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        search = CyclicSearch(cfg, space, data, DistContext(), Path(tmp))
        xb, yb = x[: cfg.batch_size], y[: cfg.batch_size]
        meter = Meter()
        t0 = time.perf_counter()
        search.install_branch(search.derive(), build_id=0, lr=cfg.lr)
        rebuild = time.perf_counter() - t0
        search.joint_step(xb, yb, 0.0, meter)  # warm-up step, not timed
        search.weight_step(xb, yb, meter)
        times, cpu = [], []
        for _ in range(args.steps):
            t0, c0 = time.perf_counter(), time.process_time()
            search.joint_step(xb, yb, 0.0, meter)
            search.weight_step(xb, yb, meter)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        choices = space.choices()
    child_madds = space.cost.child_cost(choices)
    print(f"preset {args.preset}: base {cfg.base}, {cfg.input_size}x{cfg.input_size}, batch {cfg.batch_size}, "
          f"{len(space.supernet.units)} searchable blocks, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"seconds per search step: median {sorted(times)[len(times) // 2]:.2f} (min {min(times):.2f}, "
          f"max {max(times):.2f}); CPU seconds per step (all threads) {sum(cpu) / len(cpu):.2f}; "
          f"evaluation-network build with inheritance {rebuild:.2f}s")
    print(f"child multiply-adds {child_madds / 1e6:.2f}M vs budget {cfg.budget / 1e6:.2f}M "
          f"(ratio {child_madds / cfg.budget:.3f}); space range {lo / 1e6:.2f}M .. {hi / 1e6:.2f}M")
    # the paper's published sizes (224x224, 1000 classes) against our build of the zoo genotypes
    for name, madds, params in (("cdarts_a", 294e6, 7.0e6), ("cdarts_b", 394e6, 6.4e6)):
        model = create_model_from_genotype(name)
        ours = count_macs(model, 224)
        n = sum(p.numel() for p in model.parameters())
        print(f"{name}: {ours / 1e6:.1f}M MAdds vs published {madds / 1e6:.0f}M (ratio {ours / madds:.3f}); "
              f"{n / 1e6:.2f}M params vs {params / 1e6:.1f}M")


if __name__ == "__main__":
    main()
