"""CPU time of a search-network training step with and without the strided 1x1 guard, and in NCHW.

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python benchmarks/onednn_guard_cost.py --width 4
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python benchmarks/onednn_guard_cost.py --width 16

One step = forward + backward of the CDARTS search network (``search.cell_supernet.SearchNetwork``, ImageNet
layout) on a random batch.  Arms, timed in interleaved rounds in one process (process CPU time, stable on a
shared machine):

* ``guard``: channels-last, the guard deciding (``CDARTS_ONEDNN_1X1_WORKAROUND=auto``);
* ``forced``: channels-last, every FactorizedReduce conv subsampled first (``on``): the guard's own cost;
* ``off``: channels-last, never subsampled (``off``), only where no FactorizedReduce is affected (else it
  corrupts memory) or with ``--unsafe``;
* ``nchw``: contiguous memory order (``--no-channels-last``), no guard needed.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

from backbones.darts_ops import FactorizedReduce
from backbones.onednn_guard import OVERRIDE_ENV, onednn_channel_block, strided_1x1_weight_grad_unsafe
from search.cell_supernet import SearchNetwork


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=4)
    p.add_argument("--cells", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--unsafe", action="store_true", help="also time 'off' where it writes out of bounds")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = SearchNetwork(10, args.width, args.cells, "imagenet").train()
    c_ins = sorted({m.conv_1.in_channels for m in net.modules() if isinstance(m, FactorizedReduce)})
    os.environ[OVERRIDE_ENV] = "auto"
    affected = [c for c in c_ins if strided_1x1_weight_grad_unsafe(c, 2)]
    nets = {"cl": copy.deepcopy(net).to(memory_format=torch.channels_last), "nchw": net}
    x = torch.randn(args.batch, 3, args.input_size, args.input_size)
    y = torch.randint(0, 10, (args.batch,))
    inputs = {"cl": x.contiguous(memory_format=torch.channels_last), "nchw": x}
    arms = {"guard": ("cl", "auto"), "forced": ("cl", "on"), "nchw": ("nchw", "auto")}
    if not affected or args.unsafe:
        arms["off"] = ("cl", "off")

    def step(fmt: str) -> float:
        model = nets[fmt]
        model.zero_grad(set_to_none=True)
        t = time.process_time()
        logits, _ = model(inputs[fmt])
        torch.nn.functional.cross_entropy(logits, y).backward()
        return time.process_time() - t

    for name, (fmt, mode) in arms.items():  # warm-up: oneDNN primitive caches, allocator
        os.environ[OVERRIDE_ENV] = mode
        for _ in range(2):
            step(fmt)
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.rounds):
        for name, (fmt, mode) in arms.items():
            os.environ[OVERRIDE_ENV] = mode
            times[name].append(step(fmt))
    os.environ[OVERRIDE_ENV] = "auto"
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "native")
    print(f"SearchNetwork imagenet width {args.width}, {args.cells} cells, batch {args.batch}, "
          f"{args.input_size}x{args.input_size}, {args.threads} thread(s), ONEDNN_MAX_CPU_ISA={isa}, "
          f"ATen {torch.backends.cpu.get_cpu_capability()}, oneDNN block {onednn_channel_block()}")
    print(f"FactorizedReduce input channels {c_ins}; guarded (auto): {affected or 'none'}")
    base = statistics.median(times["guard"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:7s} median {med * 1e3:8.2f} ms CPU per step  ({med / base:.3f}x guard)  "
              f"[min {min(ts) * 1e3:.2f}, {args.rounds} interleaved rounds]")


if __name__ == "__main__":
    main()
