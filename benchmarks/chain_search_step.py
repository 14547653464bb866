"""Seconds per chain-search step on this machine, and derived-child cost versus a budget.

    .venv/bin/python benchmarks/chain_search_step.py [--preset smoke64] [--steps 3] [--budget-fraction 0.5]

A step is what the search loop does after warm-up: the joint update (architecture weights and
the child on a val batch, with distillation) plus the w_S update on a train batch.  Rebuilds of
the child are timed separately.  Inputs are random tensors of the preset's size; nothing is read
from disk.  Prints the machine's load average, because shared CPUs distort the numbers.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from backbones.complexity import count_macs
from backbones.factory import create_model_from_genotype
from search.chain_search import PRESETS, ChainSearch, ChainSearchConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="smoke64", choices=sorted(PRESETS))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--budget-fraction", type=float, default=0.5, help="budget between the cheapest (0) and dearest (1) child")
    args = p.parse_args()
    cfg = ChainSearchConfig(**PRESETS[args.preset])
    search = ChainSearch(cfg, args.classes)
    lo, hi = search.cost.range()
    cfg.budget_madds = lo + args.budget_fraction * (hi - lo)
    search.total_steps = 1000
    g = torch.Generator().manual_seed(0)

    def batch():
        x = torch.randn(cfg.batch_size, 3, cfg.input_size, cfg.input_size, generator=g)
        return x, torch.randint(0, args.classes, (cfg.batch_size,), generator=g)

    t0 = time.perf_counter()
    search.set_child(search.best_choices())
    rebuild = time.perf_counter() - t0
    search.arch_step(*batch())  # warm-up step, not timed
    search.weight_step(*batch())
    times, cpu = [], []
    for _ in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        search.arch_step(*batch())
        search.weight_step(*batch())
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    choices = search.best_choices()
    child_madds = search.cost.child_madds(choices)
    print(f"preset {args.preset}: base {cfg.base}, {cfg.input_size}x{cfg.input_size}, batch {cfg.batch_size}, "
          f"{len(search.supernet.units)} searchable blocks, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"seconds per search step: median {sorted(times)[len(times) // 2]:.2f} (min {min(times):.2f}, "
          f"max {max(times):.2f}); CPU seconds per step (all threads) {sum(cpu) / len(cpu):.2f}; child rebuild with inheritance {rebuild:.2f}s")
    print(f"child multiply-adds {child_madds / 1e6:.2f}M vs budget {cfg.budget_madds / 1e6:.2f}M "
          f"(ratio {child_madds / cfg.budget_madds:.3f}); space range {lo / 1e6:.2f}M .. {hi / 1e6:.2f}M")
    # the paper's published sizes (224x224, 1000 classes) against our build of the zoo genotypes
    for name, madds, params in (("cdarts_a", 294e6, 7.0e6), ("cdarts_b", 394e6, 6.4e6)):
        model = create_model_from_genotype(name)
        ours = count_macs(model, 224)
        n = sum(p.numel() for p in model.parameters())
        print(f"{name}: {ours / 1e6:.1f}M MAdds vs published {madds / 1e6:.0f}M (ratio {ours / madds:.3f}); "
              f"{n / 1e6:.2f}M params vs {params / 1e6:.1f}M")


if __name__ == "__main__":
    main()
