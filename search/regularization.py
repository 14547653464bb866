"""Eq. 11: the L1 penalty on chosen architecture-weight entries and its decaying coefficient."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch


def reg_coefficient(epoch: int, start: float = 5.0, decay_epochs: int = 20) -> float:
    """lambda' at search epoch ``epoch``: linear from ``start`` at epoch 0 down to 0 at ``decay_epochs``, then 0."""
    if decay_epochs <= 0:
        return 0.0
    return float(start) * max(0.0, 1.0 - epoch / decay_epochs)


def default_decay_epochs(search_epochs: int) -> int:
    """Two thirds of the search epochs (20 of 30 in the paper)."""
    return max(1, round(2 * search_epochs / 3))


def l1_penalty(alphas: Iterable[torch.Tensor], op_indices: Sequence[int]) -> torch.Tensor:
    """Sum of |alpha| over the operation columns ``op_indices`` (last dimension) of every tensor."""
    terms = [a[..., list(op_indices)].abs().sum() for a in alphas]
    return torch.stack(terms).sum()
