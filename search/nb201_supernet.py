"""The NAS-Bench-201 search network: the benchmark's macro structure with every edge a softmax mixture.

Same skeleton as :class:`backbones.nb201_net.Nb201Net` (stem, three stages of N cells joined by
residual reduction blocks, BN-ReLU, pool, classifier); in every cell each of the 6 edges sums all 5
operations weighted by the softmax of its row of alpha (one ``[6, 5]`` alpha shared by all cells,
initialised with ``1e-3 * randn``).  Cell BNs have no affine parameters, as in DARTS searches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from backbones.darts_ops import Identity, ReLUConvBN
from backbones.nb201_net import ResidualReduction
from cdarts_deploy.genotype.nb201 import NB201_NODES, NB201_OPS

NUM_EDGES = NB201_NODES * (NB201_NODES + 1) // 2
NONE_INDEX = NB201_OPS.index("none")


def search_op(name: str, channels: int) -> nn.Module:
    if name == "skip_connect":
        return Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, 0, affine=False)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, 1, affine=False)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    return nn.Identity()  # ``none``: never run (its weight times zero)


class MixedEdge(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList(search_op(name, channels) for name in NB201_OPS)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        ws = weights.unbind(0)
        out = None
        for i, op in enumerate(self.ops):
            if i == NONE_INDEX:
                continue  # w * 0 changes neither the value nor any gradient
            y = ws[i] * op(x)
            out = y if out is None else out + y
        return out


class SearchCell(nn.Module):
    """Node i = sum over j < i of edge (i, j) on node j; edges in the benchmark string's order."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(MixedEdge(channels) for _ in range(NUM_EDGES))

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [x]
        e = 0
        for node in range(1, NB201_NODES + 1):
            total = None
            for src in range(node):
                y = self.edges[e](states[src], weights[e])
                total = y if total is None else total + y
                e += 1
            states.append(total)
        return states[-1]


class Nb201SearchNetwork(nn.Module):
    """``forward`` returns ``(logits, stage features)``; the features feed the student embedding heads."""

    def __init__(self, num_classes: int, width: int = 16, cells: int = 5) -> None:
        super().__init__()
        if width < 1 or cells < 1:
            raise ValueError(f"width and cells must be positive, got {width}, {cells}")
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        blocks: list[nn.Module] = []
        self.tap_blocks: list[int] = []
        self.tap_channels: list[int] = []
        c = width
        for stage in range(3):
            if stage:
                blocks.append(ResidualReduction(c, c * 2))
                c *= 2
            blocks.extend(SearchCell(c) for _ in range(cells))
            self.tap_blocks.append(len(blocks) - 1)
            self.tap_channels.append(c)
        self.cells = nn.ModuleList(blocks)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        self.alpha = nn.Parameter(1e-3 * torch.randn(NUM_EDGES, len(NB201_OPS)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p is not self.alpha]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        weights = F.softmax(self.alpha, dim=-1)
        x = self.stem(x)
        feats = []
        for i, block in enumerate(self.cells):
            x = block(x, weights) if isinstance(block, SearchCell) else block(x)
            if i == len(self.cells) - 1:
                x = self.lastact(x)
            if i in self.tap_blocks:
                feats.append(x)
        return self.classifier(self.global_pool(x).flatten(1)), feats


def discretize(alpha: torch.Tensor) -> tuple[tuple[str, ...], ...]:
    """The benchmark's rule: every edge keeps its arg-max operation, ``none`` included."""
    best = alpha.detach().argmax(dim=-1).tolist()
    nodes, e = [], 0
    for node in range(1, NB201_NODES + 1):
        nodes.append(tuple(NB201_OPS[best[e + src]] for src in range(node)))
        e += node
    return tuple(nodes)
