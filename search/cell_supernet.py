"""The DARTS-cell search network: mixed operations, search cells, architecture weights.

Every edge of a cell is a softmax-weighted mixture of all 8 operations of
``SEARCH_OPS`` (BN without affine parameters, as in DARTS).  Architecture weights
are one ``alpha_normal`` and one ``alpha_reduce`` tensor of shape
``[stages, 14, 8]`` -- ``stages`` is 1 (shared by every cell, the paper's setting)
or 3 (one per network stage, using the stage convention of
:func:`backbones.darts_net.stage_of_cell`).  Optional edge weights ``beta`` of
shape ``[stages, 14]`` are normalised per node.

The stem is built by :func:`backbones.darts_stem.build_darts_stem`, as in
:class:`backbones.darts_net.DartsNet`, so the evaluation network can share it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from backbones.darts_net import reduction_positions, stage_of_cell
from backbones.darts_ops import OPERATIONS, FactorizedReduce, ReLUConvBN
from backbones.darts_stem import build_darts_stem
from cdarts_deploy.genotype import SEARCH_OPS

NUM_NODES = 4
NUM_EDGES = sum(i + 2 for i in range(NUM_NODES))  # 14
NONE_INDEX = SEARCH_OPS.index("none")


def node_edge_slices(num_nodes: int = NUM_NODES) -> list[slice]:
    """Rows of the per-edge tensors that feed each intermediate node (node i has i + 2 inputs)."""
    slices, start = [], 0
    for i in range(num_nodes):
        slices.append(slice(start, start + i + 2))
        start += i + 2
    return slices


def edge_weights(beta: torch.Tensor) -> torch.Tensor:
    """Softmax of ``beta`` within each node's incoming edges (shape ``[..., 14]``)."""
    return torch.cat([F.softmax(beta[..., s], dim=-1) for s in node_edge_slices()], dim=-1)


class MixedOp(nn.Module):
    """All search operations on one edge; the output is their weighted sum (``none`` contributes nothing)."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList(OPERATIONS[name](channels, stride, False) for name in SEARCH_OPS)

    def forward(self, x: torch.Tensor, weights: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        # One unbind instead of an index per operation: one autograd node, whose backward stacks the
        # operation gradients instead of summing one zero-padded [8] tensor per operation.
        ws = weights.unbind(0) if isinstance(weights, torch.Tensor) else weights
        out = None
        for i, op in enumerate(self.ops):
            if i == NONE_INDEX:
                continue  # w * 0: skipping it changes neither the value nor any gradient
            y = ws[i] * op(x)
            out = y if out is None else out + y
        return out


class SearchCell(nn.Module):
    def __init__(self, c_prev_prev: int, c_prev: int, channels: int, reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, channels, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, channels, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList()
        for i in range(NUM_NODES):
            for src in range(i + 2):
                self.edges.append(MixedOp(channels, 2 if reduction and src < 2 else 1))
        self.out_channels = NUM_NODES * channels

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        rows = weights.unbind(0)  # see MixedOp.forward
        k = 0
        for i in range(NUM_NODES):
            node = None
            for j in range(i + 2):
                y = self.edges[k](states[j], rows[k])
                node = y if node is None else node + y
                k += 1
            states.append(node)
        return torch.cat(states[2:], dim=1)


class SearchNetwork(nn.Module):
    """The search network of Eq. 1; ``forward`` returns ``(logits, stage_features)``.

    ``stage_features`` are the outputs of the last cell at each resolution (the
    cells just before the two reductions and the last cell), the same taps as the
    evaluation network's ``feature_info``.
    """

    def __init__(
        self,
        num_classes: int,
        width: int = 16,
        cells: int = 8,
        layout: str = "cifar",
        per_stage_alpha: bool = False,
        learn_beta: bool = False,
    ) -> None:
        super().__init__()
        if cells < 3:
            raise ValueError(f"the search network needs at least 3 cells, got {cells}")
        self.layout = layout
        self.num_cells = cells
        self.num_stages = 3 if per_stage_alpha else 1
        c = width
        stem = build_darts_stem(layout, c)
        self.stem, self.stem0, self.stem1 = stem.stem, stem.stem0, stem.stem1
        c_pp, c_p, red_prev = stem.c_prev_prev, stem.c_prev, stem.reduction_prev
        reductions = reduction_positions(cells)
        self.reductions = reductions
        self.cells = nn.ModuleList()
        c_cur = c
        for i in range(cells):
            red = i in reductions
            if red:
                c_cur *= 2
            cell = SearchCell(c_pp, c_p, c_cur, red, red_prev)
            self.cells.append(cell)
            red_prev = red
            c_pp, c_p = c_p, cell.out_channels
        self.tap_cells = sorted({r - 1 for r in reductions if r >= 1} | {cells - 1})
        self.tap_channels = [self.cells[i].out_channels for i in self.tap_cells]
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

        shape = (self.num_stages, NUM_EDGES, len(SEARCH_OPS))
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(shape))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(shape))
        if learn_beta:
            self.beta_normal = nn.Parameter(1e-3 * torch.randn(shape[:2]))
            self.beta_reduce = nn.Parameter(1e-3 * torch.randn(shape[:2]))
        else:
            self.beta_normal = self.beta_reduce = None

    # ----- parameter groups ------------------------------------------------------------------------

    def arch_parameters(self) -> list[nn.Parameter]:
        return [p for p in (self.alpha_normal, self.alpha_reduce, self.beta_normal, self.beta_reduce) if p is not None]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def stem_modules(self) -> dict[str, nn.Module]:
        return {"stem": self.stem} if self.layout == "cifar" else {"stem0": self.stem0, "stem1": self.stem1}

    # ----- forward -----------------------------------------------------------------------------------

    def mixing_weights(self, reduction: bool, stage: int) -> torch.Tensor:
        """The ``[14, 8]`` weights of one cell: softmax over operations times the per-node edge weights."""
        s = stage if self.num_stages > 1 else 0
        alpha = (self.alpha_reduce if reduction else self.alpha_normal)[s]
        w = F.softmax(alpha, dim=-1)
        beta = self.beta_reduce if reduction else self.beta_normal
        if beta is not None:
            w = w * edge_weights(beta[s]).unsqueeze(-1)
        return w

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        s0 = self.stem0(self.stem(x))  # unused stem slots are identities (backbones.darts_stem)
        s1 = self.stem1(s0)
        cache: dict[tuple[bool, int], torch.Tensor] = {}
        feats = []
        for i, cell in enumerate(self.cells):
            key = (cell.reduction, stage_of_cell(i, self.num_cells) if self.num_stages > 1 else 0)
            if key not in cache:
                cache[key] = self.mixing_weights(*key)
            s0, s1 = s1, cell(s0, s1, cache[key])
            if i in self.tap_cells:
                feats.append(s1)
        logits = self.classifier(self.global_pool(s1).flatten(1))
        return logits, feats
