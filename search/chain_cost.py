"""Cost of the chain space: per-candidate cost table, expected cost, budget repair, budget penalty.

One :class:`CostModel` for every cost: multiply-adds (analytic, the default) or latency in
milliseconds on a deployment runtime (read from a measured :class:`cdarts_deploy.latency_table_format.LatencyTable`).
Both are additive: a child costs the fixed rest of the network plus one table entry per choice
unit, so the expected cost under the choice probabilities is differentiable and one greedy
repair and one penalty serve both.

Multiply-add counting convention (the one NAS papers report): multiply-adds of convolutions and
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
from cdarts_deploy.latency_table_format import CANDIDATES, LatencyTable

from .chain_child import build_child  # the child module imports the space too; import late
from .chain_supernet import ChainSupernet, MixedInvertedResidual

__all__ = [
    "candidate_madds",
    "CostModel",
    "budget_band",
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
    """Cost table (units x candidates) and the fixed remainder of a supernet at one input size.

    Without ``latency`` the cost is multiply-adds (``unit`` ``"madds"``); with a latency table it is
    the table's (corrected) milliseconds (``unit`` ``"ms"``): a unit's entry is the sum over its
    physical blocks, the fixed rest is the stem, fixed blocks and head, and the table's linear
    correction ``scale * sum + offset`` is folded into the entries and the fixed rest.  The table must
    have been measured for this supernet (base, widths, classes, every block's input shape).
    """

    def __init__(self, supernet: ChainSupernet, input_size: int, latency: LatencyTable | None = None) -> None:
        self.input_size = input_size
        in_sizes = _block_input_sizes(supernet, input_size)
        if latency is not None:
            self._init_latency(supernet, input_size, latency, in_sizes)
            return

        self.unit = "madds"
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

    def _init_latency(self, supernet: ChainSupernet, input_size: int, latency: LatencyTable,
                      in_sizes: dict[tuple[int, int], tuple[int, int]]) -> None:
        shapes = {}
        for unit in supernet.units:
            for m in unit.modules:
                block = supernet.net.blocks[unit.stage][m]
                shapes[(unit.stage, m)] = [latency.batch, block.in_chs, *in_sizes[(unit.stage, m)]]
        net = supernet.network
        latency.check(space="chain", input_size=input_size, base=supernet.base,
                      network={"num_classes": net.num_classes, "stem_channels": net.stem_channels,
                               "head_channels": net.head_channels}, block_shapes=shapes)
        self.unit = "ms"
        table = torch.zeros(len(supernet.units), len(CHAIN_CHOICES), dtype=torch.float64)
        for u, unit in enumerate(supernet.units):
            for m in unit.modules:
                for c, name in enumerate(CANDIDATES):
                    table[u, c] += latency.block_ms(unit.stage, m, name)
        self.table = latency.scale * table
        self.fixed = latency.corrected(latency.fixed_ms())

    def child_cost(self, unit_choices: list[int]) -> float:
        """The cost of one child (one candidate index per unit), in ``self.unit``."""
        idx = torch.as_tensor(unit_choices)
        return self.fixed + float(self.table.gather(1, idx[:, None]).sum())

    def expected_cost(self, choice_weights: torch.Tensor) -> torch.Tensor:
        """Differentiable expected cost under per-unit choice probabilities (rows sum to one)."""
        table = self.table.to(device=choice_weights.device, dtype=choice_weights.dtype)
        return self.fixed + (choice_weights * table).sum()

    def range(self) -> tuple[float, float]:
        """The cheapest and the most expensive child."""
        return self.fixed + float(self.table.min(1).values.sum()), self.fixed + float(self.table.max(1).values.sum())

    def fit_to_budget(self, alphas: torch.Tensor, budget: float, tolerance: float, upper: bool = False) -> list[int]:
        """Arg-max choices, then (only if outside the budget's band) the cheapest repairs.

        The band is ``budget`` +- ``tolerance`` (relative), or with ``upper`` (a latency limit)
        ``budget * (1 - tolerance)`` .. ``budget``: the child may not exceed the budget.
        Each repair changes one unit's choice so that the cost gets closer to the band's centre, picking
        the change that loses the least log-probability per unit of cost gained, until the child fits or
        no change helps.  The expected-cost penalty normally makes this a no-op.
        """
        target, half_width = budget_band(budget, tolerance, upper)
        logp = torch.log_softmax(alphas.detach().double().cpu(), dim=-1)
        choices = logp.argmax(-1).tolist()
        while True:
            cost = self.child_cost(choices)
            gap = target - cost
            if abs(gap) <= half_width:
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


def budget_band(budget: float, tolerance: float, upper: bool = False) -> tuple[float, float]:
    """(centre, half width) of the costs that meet ``budget``: +- ``tolerance`` around it, or with ``upper``
    the band ``budget * (1 - tolerance)`` .. ``budget`` below it."""
    if upper:
        return budget * (1 - tolerance / 2), budget * tolerance / 2
    return budget, budget * tolerance


def budget_penalty(expected: torch.Tensor, budget: float) -> torch.Tensor:
    """Squared relative deviation of the expected cost (multiply-adds or ms) from the budget (two-sided)."""
    return (expected / budget - 1.0) ** 2
