#!/usr/bin/env python
"""Chain-space search on CPU: training steps with and without the faster depthwise backward, side by side.

    .venv/bin/python benchmarks/chain_depthwise_step.py                       # cdarts_b_base, 96x96, batch 16
    .venv/bin/python benchmarks/chain_depthwise_step.py --input-size 224 --batch 8

Times, in one process and interleaved round by round, a forward + backward of (a) the chain supernet
(all six (kernel, expansion) candidates of every searchable block, softmax-weighted) and (b) a child
network built by timm from the supernet's arg-max genotype (the evaluation network), each once with
torch's own depthwise backward and once with ``backbones.depthwise_conv``'s.  Gradients of the two are
compared before timing.  Prints process CPU seconds per step (median of --rounds) and the speed-up.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

import search.chain_supernet as chain_supernet  # noqa: E402
from backbones.depthwise_conv import takes_faster_backward, use_faster_depthwise_backward  # noqa: E402
from search.chain_child import build_child  # noqa: E402


def step(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, faster: bool) -> float:
    """CPU seconds of one forward + backward; ``faster`` switches the supernet's depthwise backward."""
    chain_supernet.takes_faster_backward = takes_faster_backward if faster else (lambda *a: False)
    net.zero_grad(set_to_none=True)
    start = time.process_time()
    F.cross_entropy(net(x), y).backward()
    return time.process_time() - start


def gradients(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, faster: bool) -> list[torch.Tensor]:
    step(net, x, y, faster)
    return [p.grad.clone() for p in net.parameters() if p.grad is not None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="cdarts_b_base")
    ap.add_argument("--input-size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    supernet = chain_supernet.ChainSupernet(args.base, num_classes=10, input_size=args.input_size).train()
    _, child = build_child(supernet)
    plain_child, fast_child = child.train(), copy.deepcopy(child).train()
    turned = use_faster_depthwise_backward(fast_child)
    fmt = torch.channels_last
    supernet, plain_child, fast_child = (m.to(memory_format=fmt) for m in (supernet, plain_child, fast_child))
    x = torch.randn(args.batch, 3, args.input_size, args.input_size).to(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch,))

    cases = {"supernet": (supernet, supernet), "child": (plain_child, fast_child)}
    for name, (plain, fast) in cases.items():  # same gradients before any timing (relative to the largest,
        # as some BatchNorm biases get gradients at rounding level)
        a, b = (torch.cat([g.flatten() for g in grads]) for grads in (gradients(fast, x, y, True),
                                                                     gradients(plain, x, y, False)))
        worst = float((a - b).abs().max() / b.abs().max())
        if worst > 1e-3:
            raise SystemExit(f"{name}: gradients differ (relative {worst:.1e})")
    times: dict[str, list[float]] = {f"{n}/{k}": [] for n in cases for k in ("torch", "faster")}
    for _ in range(args.rounds):
        for name, (plain, fast) in cases.items():
            times[f"{name}/torch"].append(step(plain, x, y, False))
            times[f"{name}/faster"].append(step(fast, x, y, True))

    def median(v: list[float]) -> float:
        return sorted(v)[len(v) // 2]

    print(f"{args.base}, {args.input_size}x{args.input_size}, batch {args.batch}, {args.threads} thread(s), "
          f"channels-last, CPU s per forward + backward, median of {args.rounds} interleaved rounds; "
          f"{turned} depthwise convs in the child")
    print(f"{'':10}{'torch':>10}{'faster':>10}{'speed-up':>10}")
    for name in cases:
        a, b = median(times[f"{name}/torch"]), median(times[f"{name}/faster"])
        print(f"{name:10}{a:10.3f}{b:10.3f}{a / b:9.2f}x")


if __name__ == "__main__":
    main()
