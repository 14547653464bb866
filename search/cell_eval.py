"""The evaluation network of the cell search and its weight pool (paper Section 3.2, weight sharing).

The pool (:class:`search.eval_pool.WeightPool`) holds the weights and SGD momentum
of every ``(cell, node, input, operation)`` the deep evaluation network has ever
used.  When the genotype changes, a fresh :class:`backbones.darts_net.DartsNet` is
built, its edge operations are filled from the pool (both operations of every node)
and the genotype-independent parts (cell preprocessing, classifier) carry over by
name.  The embedding heads belong to the space (shared with the search network).
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn

from backbones.darts_net import DartsNet
from backbones.depthwise_conv import use_faster_depthwise_backward
from cdarts_deploy.genotype import CellGenotype

from .eval_pool import WeightPool


def edge_key(cell: int, node: int, src: int, op: str) -> str:
    return f"{cell}.{node}.{src}.{op}"


class EvalBranch(nn.Module):
    """A DartsNet whose ``forward`` returns ``(logits, stage_features)``: the last ``levels`` feature taps."""

    def __init__(self, net: nn.Module, levels: int) -> None:
        super().__init__()
        self.net = net
        self.levels = levels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        final, feats = self.net.forward_intermediates(x)
        feats = feats[-self.levels:]  # ImageNet layout also taps stem0; the levels are the cell taps
        return self.net.forward_head(final), feats


class EvalPool(WeightPool):
    """Evaluation networks of successive cell genotypes; parts are ``(cell, node, input, operation)``.

    ``shared_stem``: modules of the search network (name -> module) used in place
    of the evaluation network's own stem; their values live in the search network,
    so the pool never stores them.
    """

    def __init__(
        self,
        layout: str,
        width: int,
        cells: int,
        num_classes: int,
        shared_stem: dict[str, nn.Module] | None = None,
        seed: int = 0,
        levels: int = 3,
    ) -> None:
        super().__init__()
        self.levels = levels
        self.layout, self.width, self.cells, self.num_classes = layout, width, cells, num_classes
        self.shared_stem = shared_stem or {}
        self.seed = seed
        self.genotype: CellGenotype | None = None

    def parts(self, branch: nn.Module) -> Iterator[tuple[str, str, nn.Module]]:
        for i, cell in enumerate(branch.net.cells):
            for k, (node, src, op) in enumerate(cell.edges):
                yield edge_key(i, node, src, op), f"net.cells.{i}.ops.{k}.", cell.ops[k]

    def is_shared(self, name: str) -> bool:
        return any(name.startswith(f"net.{s}.") for s in self.shared_stem)

    def build(self, genotype: CellGenotype, device: torch.device, build_id: int) -> EvalBranch:
        """A new evaluation branch for ``genotype`` with every weight the pool knows inherited.

        Call :meth:`write_back` for the outgoing branch first.  Weights the pool has
        never seen are drawn from a generator seeded by ``build_id`` (not from the
        training RNG stream), so a resumed run rebuilds exactly what an
        uninterrupted one built.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 100003 + build_id)
            net = DartsNet(genotype, layout=self.layout, width=self.width, cells=self.cells,
                           num_classes=self.num_classes)
        for name, module in self.shared_stem.items():
            setattr(net, name, module)
        if device.type == "cpu":
            use_faster_depthwise_backward(net)  # same parameter names, so inheriting from the pool is unchanged
        self.genotype = genotype
        return self.adopt(EvalBranch(net, self.levels).to(device))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.genotype = None

