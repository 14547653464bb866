"""What one update of the search touches: parameters frozen for a block (the other player of the step stays
fixed), buffers restored after a replayed forward, an optimizer's parameters and learning rate."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd


def set_lr(optimizer: torch.optim.Optimizer | None, lr: float) -> None:
    """Set every parameter group's learning rate (no-op without an optimizer: the evaluation network's before
    its first build)."""
    if optimizer is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr


@contextmanager
def frozen(params: Iterable[nn.Parameter]) -> Iterator[None]:
    """``params`` get no gradient inside the block (the other player of the step stays fixed)."""
    params = list(params)
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextmanager
def buffers_kept(module: nn.Module) -> Iterator[None]:
    """Buffers (BatchNorm running statistics) of ``module`` are as before the block when it ends."""
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


def stochastic_parts(module: nn.Module) -> list[str]:
    """Names of the submodules of ``module`` whose training-mode forward draws random numbers: dropout and
    drop path with a non-zero probability (torch's dropout modules, timm's ``drop_prob`` / ``drop_rate``
    attributes, ``DartsNet`` cells' ``drop_prob``)."""
    names = []
    for name, m in module.named_modules():
        if not m.training:
            continue
        if isinstance(m, _DropoutNd):
            p = m.p
        else:
            p = max(float(getattr(m, "drop_prob", 0.0) or 0.0), float(getattr(m, "drop_rate", 0.0) or 0.0))
        if p > 0:
            names.append(name or type(m).__name__)
    return names


def optimizer_params(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    """The parameters ``optimizer`` updates, every group's."""
    return [p for g in optimizer.param_groups for p in g["params"]]
