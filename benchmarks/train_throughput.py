#!/usr/bin/env python
"""Images/s of cdarts-train's epoch loop against a bare timm-style loop, same network, batch and threads.

    python benchmarks/train_throughput.py                       # CPU, small network
    python benchmarks/train_throughput.py --device cuda --width 36 --cells 20 --batch 96 --channels-last --amp bf16

Both loops see the same pre-made batches in memory (data loading is not measured), the same network (with the
auxiliary tower when --aux-weight > 0) and the same SGD optimizer and gradient clipping at 5; the loops alternate,
so a machine whose load changes affects both.  The ratio is ours / bare (1.0 = no overhead).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch  # noqa: E402
from timm.optim import create_optimizer_v2  # noqa: E402
from timm.scheduler import create_scheduler_v2  # noqa: E402
from torch import nn  # noqa: E402

from backbones.factory import create_model_from_genotype  # noqa: E402
from cdarts_deploy.training.loop import StepSettings, train_one_epoch  # noqa: E402


def bare_epoch(model: nn.Module, batches: list, optimizer: torch.optim.Optimizer, aux_weight: float,
               device: torch.device, amp: torch.dtype | None, channels_last: bool) -> None:
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for images, targets in batches:
        images, targets = images.to(device), targets.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out = model(images)
            if isinstance(out, tuple):
                loss = loss_fn(out[0], targets) + aux_weight * loss_fn(out[1], targets)
            else:
                loss = loss_fn(out, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # both loops clip at 5 (DARTS retraining)
        optimizer.step()


def measure(genotype: str = "cdarts_cifar", width: int = 8, cells: int = 5, size: int = 32, batch: int = 32,
            steps: int = 8, rounds: int = 3, aux_weight: float = 0.4, threads: int | None = 2, device: str = "cpu",
            channels_last: bool = False, amp: str = "off") -> dict:
    """Images/s of cdarts-train's loop and of the bare loop (best of ``rounds`` alternating epochs) and their ratio.

    ``threads`` None leaves torch's thread count as it is (GPU runs)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    model = create_model_from_genotype(genotype, layout="cifar", width=width, cells=cells, num_classes=10,
                                       auxiliary=aux_weight > 0).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    batches = [(torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))) for _ in range(steps)]
    opt = create_optimizer_v2(model, opt="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, filter_bias_and_bn=False)
    sched, _ = create_scheduler_v2(opt, sched="cosine", num_epochs=100, step_on_epochs=False, updates_per_epoch=steps)
    settings = StepSettings(dev, aux_weight=aux_weight, grad_clip=5.0, amp_dtype=amp_dtype,
                            channels_last=channels_last, progress=False)
    loss_fn = nn.CrossEntropyLoss()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn) -> float:
        sync()
        t = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t

    ours = lambda: train_one_epoch(model, batches, opt, loss_fn, epoch=0, settings=settings, scheduler=sched)  # noqa: E731
    bare = lambda: bare_epoch(model, batches, opt, aux_weight, dev, amp_dtype, channels_last)  # noqa: E731
    ours(), bare()  # warm-up
    t_ours, t_bare = [], []
    for _ in range(rounds):
        t_ours.append(timed(ours))
        t_bare.append(timed(bare))
    n = steps * batch
    ips_ours, ips_bare = n / min(t_ours), n / min(t_bare)
    return {"device": str(dev), "threads": torch.get_num_threads(), "genotype": genotype, "width": width,
            "cells": cells, "size": size, "batch": batch, "steps": steps, "rounds": rounds, "aux_weight": aux_weight,
            "channels_last": channels_last, "amp": amp, "images_per_s_cdarts_train": ips_ours,
            "images_per_s_bare": ips_bare, "ratio": ips_ours / ips_bare}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--genotype", default="cdarts_cifar")
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--cells", type=int, default=5)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=8, help="steps per timed epoch")
    p.add_argument("--rounds", type=int, default=3, help="timed epochs per loop (alternating)")
    p.add_argument("--aux-weight", type=float, default=0.4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off")
    args = p.parse_args()
    r = measure(args.genotype, args.width, args.cells, args.size, args.batch, args.steps, args.rounds,
                args.aux_weight, args.threads, args.device, args.channels_last, args.amp)
    print(f"device {r['device']}, threads {r['threads']}, {args.genotype} C={args.width} cells={args.cells} "
          f"{args.size}x{args.size}, batch {args.batch}, aux {args.aux_weight}, channels_last {args.channels_last}, "
          f"amp {args.amp}")
    print(f"{'loop':<12}{'images/s':>12}")
    print(f"{'cdarts-train':<12}{r['images_per_s_cdarts_train']:>12.1f}")
    print(f"{'bare timm':<12}{r['images_per_s_bare']:>12.1f}")
    print(f"ratio cdarts-train / bare = {r['ratio']:.3f} (best of {args.rounds} epochs of {args.steps} steps; "
          "cdarts-train also steps the scheduler and keeps meters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
