"""What the search loop (:mod:`search.trainer`) needs from a search space.

Algorithm 1 (paper Section 3.2) is the same for every space; a space supplies the
search network with its distillation levels, discretization, the evaluation
network with its weight pool, and optional loss terms.  ``search.cell_space.CellSpace``
(DARTS cells), ``search.chain_space.ChainSpace`` (MBConv chains) and ``search.nb201_space.Nb201Space``
(NAS-Bench-201 cells) implement it; :class:`PooledSpace` holds what they do the same way.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from cdarts_deploy.genotype import Genotype

from .distill import EmbeddingHeads
from .errors import SearchInputError


class SearchSpace(Protocol):
    #: number of distillation levels: one per network stage (one embedding head each)
    levels: int
    #: the embedding heads, shared by the search and the evaluation network (search.distill.EmbeddingHeads)
    heads: EmbeddingHeads
    #: weights inherited by the last built evaluation network's parts
    inherited: int

    def arch_parameters(self) -> list[nn.Parameter]: ...  # alpha
    def weight_parameters(self) -> list[nn.Parameter]: ...  # w_S
    def shared_with_eval(self) -> list[nn.Parameter]: ...  # w_S entries w_E also trains (a shared stem)
    def train(self) -> None: ...  # search network and heads to training mode
    def search_logits(self, x: torch.Tensor) -> torch.Tensor: ...  # the w_S and DARTS steps: no heads
    def student(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]: ...  # logits, stage features
    def derive(self) -> Genotype: ...
    def build_eval(self, genotype: Genotype, build_id: int) -> nn.Module: ...  # forward -> (logits, features)
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


class PooledSpace:
    """What every space does the same way: the evaluation network comes from its weight pool, and a checkpoint
    holds the search network (:attr:`search_module`), the embedding heads and the pool."""

    cfg: Any
    device: torch.device
    pool: Any  # a search.eval_pool.WeightPool
    heads: EmbeddingHeads

    @property
    def search_module(self) -> nn.Module:
        raise NotImplementedError

    @property
    def inherited(self) -> int:
        return self.pool.last_inherited

    def arch_parameters(self) -> list[nn.Parameter]:
        return self.search_module.arch_parameters()

    def weight_parameters(self) -> list[nn.Parameter]:
        return self.search_module.weight_parameters()

    def train(self) -> None:
        self.search_module.train()
        self.heads.train()

    # A search network whose forward returns (logits, features at the distillation levels); others override.
    def search_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.search_module(x)[0]

    def student(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.search_module(x)

    def build_eval(self, genotype: Genotype, build_id: int) -> nn.Module:
        return self.pool.build(genotype, self.device, build_id)

    def eval_optimizer(self, extra: nn.Module, lr: float) -> torch.optim.Optimizer:
        return self.pool.make_optimizer(extra, lr, self.cfg.momentum, self.cfg.weight_decay)

    def write_back(self, optimizer: torch.optim.Optimizer | None) -> None:
        self.pool.write_back(optimizer)

    def state_dict(self) -> dict[str, Any]:
        return space_state(self.search_module, self.heads, self.pool)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_space_state(state, self.search_module, self.heads, self.pool)


def space_state(search_net: nn.Module, heads: nn.Module, pool: Any) -> dict[str, Any]:
    """A space's part of a search checkpoint: its search network, embedding heads and evaluation weight pool."""
    return {"search_net": search_net.state_dict(), "heads": heads.state_dict(),
            "pool": pool.state_dict()}


def load_space_state(state: dict[str, Any], search_net: nn.Module, heads: nn.Module, pool: Any) -> None:
    """Restore what :func:`space_state` saved."""
    if "heads" not in state:  # written before the heads were shared by both networks
        raise SearchInputError("the checkpoint holds per-network embedding heads of an earlier version; "
                               "start a new --out")
    search_net.load_state_dict(state["search_net"])
    heads.load_state_dict(state["heads"])
    pool.load_state_dict(state["pool"])
