"""The DARTS cell space (paper Section 3.3) as a space of the search loop (:mod:`search.space`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from backbones.depthwise_conv import use_faster_depthwise_backward
from cdarts_deploy.drawing.cells import draw_genotype
from cdarts_deploy.genotype import SEARCH_OPS, CellGenotype, CellNetwork

from .cell_discretize import count_op, discretize
from .cell_eval import EvalPool
from .cell_supernet import SearchNetwork
from .config import SearchConfig
from .distill import EmbeddingHeads
from .errors import SearchInputError
from .regularization import l1_penalty
from .space import PooledSpace, alpha_entropy


class CellSpace(PooledSpace):
    """Search network, the embedding heads of both networks, discretization and the evaluation-network pool."""

    def __init__(self, cfg: SearchConfig, num_classes: int, layout: str, input_size: int, device: torch.device) -> None:
        self.cfg, self.layout, self.num_classes, self.input_size = cfg, layout, num_classes, input_size
        for name, value in (("--width", cfg.width), ("--eval-width", cfg.eval_width)):
            if value < 2 or value % 2:
                raise SearchInputError(f"{name} {value}: the width must be an even number >= 2")
        for name, value in (("--cells", cfg.cells), ("--eval-cells", cfg.eval_cells)):
            if value < 3:
                raise SearchInputError(f"{name} {value}: a DARTS network needs at least 3 cells")
        unknown = [op for op in self.reg_ops if op not in SEARCH_OPS]
        if unknown:
            raise SearchInputError(f"--reg-ops: unknown operation {unknown[0]!r}; expected names from "
                                   + ", ".join(SEARCH_OPS))
        self.search_net = SearchNetwork(num_classes, cfg.width, cfg.cells, layout, cfg.per_stage_alpha,
                                        cfg.learn_beta).to(device)
        if device.type == "cpu":
            use_faster_depthwise_backward(self.search_net)  # before any optimizer sees the parameters
        # one set of heads for both networks: equal stage widths (DartsNet and the search cells both concatenate
        # four nodes, so equal --width and --eval-width give equal stage channels)
        if cfg.eval_width != cfg.width:
            raise SearchInputError(f"--eval-width {cfg.eval_width}: the embedding heads are shared by both networks, "
                                   f"so the evaluation network needs the search width; set it to --width {cfg.width}")
        self.heads = EmbeddingHeads(self.search_net.tap_channels, num_classes, cfg.head_mid,
                                    cfg.head_embed).to(device)
        self.pool = EvalPool(layout, cfg.eval_width, cfg.eval_cells, num_classes,
                             shared_stem=self.search_net.stem_modules() if cfg.share_stem else None, seed=cfg.seed,
                             levels=len(self.heads))
        self.device = device
        self.levels = len(self.heads)

    @property
    def reg_ops(self) -> list[str]:
        return [s.strip() for s in self.cfg.reg_ops.split(",") if s.strip()]

    # ----- parameters -----------------------------------------------------------------------------------

    @property
    def search_module(self) -> nn.Module:
        return self.search_net

    def shared_with_eval(self) -> list[nn.Parameter]:
        return [p for m in self.pool.shared_stem.values() for p in m.parameters()]

    # ----- architecture ----------------------------------------------------------------------------------

    def network_hints(self) -> CellNetwork:
        return CellNetwork(layout=self.layout, width=self.cfg.export_width, cells=self.cfg.export_cells,
                           num_classes=self.num_classes, input_size=self.input_size)

    def derive(self, name: str = "searched") -> CellGenotype:
        n = self.search_net
        return discretize(n.alpha_normal, n.alpha_reduce, n.beta_normal, n.beta_reduce, network=self.network_hints(),
                          name=name, description=f"{self.cfg.method} search on {self.cfg.dataset}")

    def reg_loss(self) -> torch.Tensor:
        idx = [SEARCH_OPS.index(op) for op in self.reg_ops]
        return l1_penalty([self.search_net.alpha_normal, self.search_net.alpha_reduce], idx)

    def arch_cost(self) -> torch.Tensor | None:
        return None  # no cost term in the cell space yet

    def bn_modules(self) -> list[nn.Module]:
        return [self.search_net, self.heads]

    def stats(self, genotype: CellGenotype) -> dict[str, Any]:
        return {
            "skip_normal": count_op(genotype, "skip_connect", "normal"),
            "skip_reduce": count_op(genotype, "skip_connect", "reduce"),
            "skip_mass_normal": round(self.op_mass("skip_connect", "normal"), 5),
            "alpha_entropy_normal": round(alpha_entropy(self.search_net.alpha_normal), 5),
            "alpha_entropy_reduce": round(alpha_entropy(self.search_net.alpha_reduce), 5),
        }

    def op_mass(self, op: str, which: str = "normal") -> float:
        """Softmax weight of ``op`` averaged over the edges of the ``which`` cells."""
        alpha = self.search_net.alpha_normal if which == "normal" else self.search_net.alpha_reduce
        with torch.no_grad():
            return float(torch.softmax(alpha.detach().float(), -1)[..., SEARCH_OPS.index(op)].mean())

    def arch_state(self) -> dict[str, list]:
        return {n: p.detach().cpu().tolist() for n, p in self.search_net.named_parameters()
                if n.startswith(("alpha", "beta"))}

    # ----- evaluation network ------------------------------------------------------------------------

    # ----- checkpoint and outputs ------------------------------------------------------------------------

    def finish(self, genotype: CellGenotype, out: Path, branch: nn.Module | None) -> None:
        draw_genotype(genotype, out / "cells.png")
