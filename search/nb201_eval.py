"""The evaluation network of the NAS-Bench-201 search and its weight pool (paper Section 3.2, weight sharing).

Parts are ``(block, edge, operation)``: every operation an edge of the evaluation network has held
keeps its weights and momentum in the pool while another operation holds the edge.  The
architecture-independent rest (stem, residual reductions, final BN, classifier)
carries over by name; the embedding heads belong to the space (shared with the search network).
The network is :class:`backbones.nb201_net.Nb201Net`, the benchmark's own.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn

from backbones.nb201_net import Nb201Cell, Nb201Net
from cdarts_deploy.genotype import Nb201Genotype

from .cell_eval import EvalBranch
from .eval_pool import WeightPool


class Nb201EvalPool(WeightPool):
    """Evaluation networks of successive nb201 genotypes; ``shared_stem`` as in the cell space."""

    def __init__(self, width: int, cells: int, num_classes: int, shared_stem: dict[str, nn.Module] | None = None,
                 seed: int = 0, levels: int = 3) -> None:
        super().__init__()
        self.width, self.cells, self.num_classes = width, cells, num_classes
        self.shared_stem = shared_stem or {}
        self.seed = seed
        self.levels = levels
        self.genotype: Nb201Genotype | None = None

    def parts(self, branch: nn.Module) -> Iterator[tuple[str, str, nn.Module]]:
        ops = [op for node in branch.net.genotype.nodes for op in node]
        for i, block in enumerate(branch.net.cells):
            if isinstance(block, Nb201Cell):
                for e, module in enumerate(block.edges):
                    yield f"{i}.{e}.{ops[e]}", f"net.cells.{i}.edges.{e}.", module

    def is_shared(self, name: str) -> bool:
        return any(name.startswith(f"net.{s}.") for s in self.shared_stem)

    def build(self, genotype: Nb201Genotype, device: torch.device, build_id: int) -> EvalBranch:
        """A new branch for ``genotype`` with every known weight inherited; new weights come from a generator
        seeded by ``build_id``, so a resumed run rebuilds what an uninterrupted one built."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 100003 + build_id)
            net = Nb201Net(genotype, width=self.width, cells=self.cells, num_classes=self.num_classes)
        for name, module in self.shared_stem.items():
            setattr(net, name, module)
        self.genotype = genotype
        return self.adopt(EvalBranch(net, self.levels).to(device))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.genotype = None
