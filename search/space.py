"""What the search loop (:mod:`search.trainer`) needs from a search space.

Algorithm 1 (paper Section 3.2) is the same for every space; a space supplies the
search network with its distillation levels, discretization, the evaluation
network with its weight pool, and optional loss terms.  ``search.cell_space.CellSpace``
(DARTS cells) and ``search.chain_space.ChainSpace`` (MBConv chains) implement it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from cdarts_deploy.genotype import Genotype


class SearchSpace(Protocol):
    #: number of distillation levels: one per embedding head, then the final logits
    levels: int
    #: the search network's embedding heads (trained jointly with w_E)
    student_heads: nn.Module
    #: weights inherited by the last built evaluation network's parts
    inherited: int

    def arch_parameters(self) -> list[nn.Parameter]: ...  # alpha
    def weight_parameters(self) -> list[nn.Parameter]: ...  # w_S
    def shared_with_eval(self) -> list[nn.Parameter]: ...  # w_S entries w_E also trains (a shared stem)
    def train(self) -> None: ...  # search network and heads to training mode
    def search_logits(self, x: torch.Tensor) -> torch.Tensor: ...  # the w_S and DARTS steps: no heads
    def student(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]: ...  # logits, levels
    def derive(self) -> Genotype: ...
    def build_eval(self, genotype: Genotype, build_id: int) -> nn.Module: ...  # forward -> (logits, levels)
    def eval_optimizer(self, extra: nn.Module, lr: float) -> torch.optim.Optimizer: ...
    def write_back(self, optimizer: torch.optim.Optimizer | None) -> None: ...
    def reg_loss(self) -> torch.Tensor | None: ...  # unscaled Eq. 11 penalty; None: the space has none
    def arch_cost(self) -> torch.Tensor | None: ...  # weighted cost term (multiply-add budget, latency ...)
    # the search side: BN statistics averaged across processes, memory order set
    def bn_modules(self) -> list[nn.Module]: ...
    def stats(self, genotype: Genotype) -> dict[str, Any]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def finish(self, genotype: Genotype, out: Path, branch: nn.Module | None) -> None: ...  # final files


def alpha_entropy(alpha: torch.Tensor) -> float:
    """Mean entropy of the per-row softmax of ``alpha``, divided by log(#choices): 1 uniform, 0 committed."""
    with torch.no_grad():
        p = F.softmax(alpha.detach().float(), dim=-1)
        h = -(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean()
        return float(h / math.log(p.shape[-1]))


def space_state(search_net: nn.Module, student_heads: nn.Module, pool: Any) -> dict[str, Any]:
    """A space's part of a search checkpoint: its search network, embedding heads and evaluation weight pool."""
    return {"search_net": search_net.state_dict(), "student_heads": student_heads.state_dict(),
            "pool": pool.state_dict()}


def load_space_state(state: dict[str, Any], search_net: nn.Module, student_heads: nn.Module, pool: Any) -> None:
    """Restore what :func:`space_state` saved."""
    search_net.load_state_dict(state["search_net"])
    student_heads.load_state_dict(state["student_heads"])
    pool.load_state_dict(state["pool"])
