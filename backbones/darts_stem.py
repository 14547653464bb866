"""The stems of DARTS-space networks, shared by the evaluation network and the search network.

* ``cifar``: one 3x3 conv (``in_chans`` -> 3C) + BN at full resolution; both cell inputs are its output.
* ``imagenet``: ``stem0`` (two stride-2 3x3 convs to C channels at 1/4) feeds cell input 0 and
  ``stem1`` (ReLU, stride-2 3x3 conv, BN at 1/8) cell input 1, so the first cell reduces input 0.

Every layout fills the same three slots ``stem``, ``stem0``, ``stem1`` (the unused ones are
parameter-free identities), so a network runs its stem as one straight line of code --
``s0 = stem0(stem(x)); s1 = stem1(s0)`` -- that TorchScript and symbolic tracing accept, while the
state_dict keys stay ``stem.*`` (CIFAR) and ``stem0.*`` / ``stem1.*`` (ImageNet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from cdarts_deploy.genotype import LAYOUTS

__all__ = ["DartsStem", "build_darts_stem"]


@dataclass
class DartsStem:
    """The three stem slots of a layout and what the first cell receives from them."""

    stem: nn.Module
    stem0: nn.Module
    stem1: nn.Module
    #: Channels of cell input 0 and cell input 1.
    c_prev_prev: int
    c_prev: int
    #: Whether cell input 0 has twice the resolution of input 1 (the first cell then reduces it).
    reduction_prev: bool
    #: ``feature_info`` entry of the stem tap (ImageNet only: stem0 is the one 1/4 map).
    feature_info: dict[str, Any] | None


def build_darts_stem(layout: str, width: int, in_chans: int = 3) -> DartsStem:
    """The stem of a DARTS network with initial width ``width`` (C) in ``layout``."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    c = width
    if layout == "cifar":
        c_stem = 3 * c
        stem = nn.Sequential(nn.Conv2d(in_chans, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
        return DartsStem(stem, nn.Identity(), nn.Identity(), c_stem, c_stem, False, None)
    stem0 = nn.Sequential(
        nn.Conv2d(in_chans, c // 2, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c // 2),
        nn.ReLU(inplace=True),
        nn.Conv2d(c // 2, c, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c),
    )
    stem1 = nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c),
    )
    return DartsStem(nn.Identity(), stem0, stem1, c, c, True, dict(num_chs=c, reduction=4, module="stem0"))

