"""Multiply-adds of the chain space: per-candidate cost table, expected cost, budget penalty.

Counting convention (the one NAS papers report): multiply-adds of convolutions and
linear layers for one image, BN/activation/pooling excluded.  The candidate costs are
analytic (the formula of one inverted-residual block); the fixed rest of the network is
measured once on a built child with ``backbones.complexity.count_macs``, so stem, head and fixed stages are
whatever timm builds.
"""

from __future__ import annotations

import math

import torch
from backbones.complexity import count_macs
from cdarts_deploy.genotype import CHAIN_CHOICES

from .chain_supernet import ChainSupernet, MixedInvertedResidual

__all__ = [
    "candidate_madds",
    "CostModel",
    "budget_penalty",
]


def candidate_madds(block: MixedInvertedResidual, choice: int, in_hw: tuple[int, int]) -> int:
    """Multiply-adds of one candidate of ``block`` given its input's spatial size."""
    k, e = CHAIN_CHOICES[choice]
    mid = block.mids[e]
    h, w = in_hw
    ho, wo = _out_size(h, k, block.stride), _out_size(w, k, block.stride)
    madds = h * w * block.in_chs * mid  # 1x1 expansion
    madds += ho * wo * mid * k * k  # depthwise
    if block.se_ratio:
        madds += 2 * mid * block.rds[e]  # squeeze-excite on the pooled vector
    madds += ho * wo * mid * block.out_chs  # 1x1 projection
    return madds


def _out_size(size: int, kernel: int, stride: int) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


class CostModel:
    """Cost table (units x candidates) and the fixed remainder of a supernet at one input size."""

    def __init__(self, supernet: ChainSupernet, input_size: int) -> None:
        from .chain_child import build_child  # the child module imports the space too; import late

        self.input_size = input_size
        in_sizes = _block_input_sizes(supernet, input_size)
        table = torch.zeros(len(supernet.units), len(CHAIN_CHOICES), dtype=torch.float64)
        for u, unit in enumerate(supernet.units):
            for m in unit.modules:
                block = supernet.net.blocks[unit.stage][m]
                for c in range(len(CHAIN_CHOICES)):
                    table[u, c] += candidate_madds(block, c, in_sizes[(unit.stage, m)])
        self.table = table
        zero = [0] * len(supernet.units)
        _, child = build_child(supernet, zero)
        self.fixed = float(count_macs(child, input_size) - table[:, 0].sum().item())

    def child_madds(self, unit_choices: list[int]) -> float:
        idx = torch.as_tensor(unit_choices)
        return self.fixed + float(self.table.gather(1, idx[:, None]).sum())

    def expected_madds(self, choice_weights: torch.Tensor) -> torch.Tensor:
        """Differentiable E[multiply-adds] under per-unit choice probabilities (rows sum to one)."""
        table = self.table.to(device=choice_weights.device, dtype=choice_weights.dtype)
        return self.fixed + (choice_weights * table).sum()

    def range(self) -> tuple[float, float]:
        """The cheapest and the most expensive child."""
        return self.fixed + float(self.table.min(1).values.sum()), self.fixed + float(self.table.max(1).values.sum())

    def fit_to_budget(self, alphas: torch.Tensor, budget: float, tolerance: float) -> list[int]:
        """Arg-max choices, then (only if outside ``budget`` +- ``tolerance``) the cheapest repairs.

        Each repair changes one unit's choice so that the cost gets closer to the budget, picking
        the change that loses the least log-probability per multiply-add gained, until the child fits or
        no change helps.  The expected-cost penalty normally makes this a no-op.
        """
        logp = torch.log_softmax(alphas.detach().double().cpu(), dim=-1)
        choices = logp.argmax(-1).tolist()
        while True:
            cost = self.child_madds(choices)
            gap = budget - cost
            if abs(gap) <= tolerance * budget:
                return choices
            best, best_score = None, math.inf
            for u, c0 in enumerate(choices):
                for c in range(len(CHAIN_CHOICES)):
                    delta = float(self.table[u, c] - self.table[u, c0])
                    moved = abs(gap) - abs(gap - delta)  # how much closer to the budget the change gets
                    if moved <= 0:
                        continue
                    score = float(logp[u, c0] - logp[u, c]) / moved
                    if score < best_score:
                        best, best_score = (u, c), score
            if best is None:
                return choices
            choices[best[0]] = best[1]


def _block_input_sizes(supernet: ChainSupernet, input_size: int) -> dict[tuple[int, int], tuple[int, int]]:
    """Spatial input size of every mixed block, recorded from one forward pass."""
    sizes: dict[tuple[int, int], tuple[int, int]] = {}
    handles = []
    for unit in supernet.units:
        for m in unit.modules:
            block = supernet.net.blocks[unit.stage][m]

            def hook(_mod, args, key=(unit.stage, m)):
                sizes[key] = (args[0].shape[2], args[0].shape[3])

            handles.append(block.register_forward_pre_hook(hook))
    was_training = supernet.training
    supernet.eval()
    try:
        with torch.no_grad():
            supernet(torch.zeros(1, 3, input_size, input_size, device=supernet.alphas.device))
    finally:
        for h in handles:
            h.remove()
        supernet.train(was_training)
    return sizes


def budget_penalty(expected: torch.Tensor, budget: float) -> torch.Tensor:
    """Squared relative deviation of the expected multiply-adds from the budget (two-sided)."""
    return (expected / budget - 1.0) ** 2
