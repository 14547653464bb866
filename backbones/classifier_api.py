"""The parts of timm's classifier interface that the project's own networks share.

A network using it keeps its stem in ``stem``, its repeated blocks in ``cells``, and its head as timm's
``create_classifier`` pair ``global_pool`` + ``classifier`` over ``num_features`` channels.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from timm.layers import create_classifier
from torch import nn


class TimmClassifierApi:
    """``group_matcher``, ``set_grad_checkpointing``, ``get_classifier`` and ``reset_classifier`` as timm models
    have them (a mixin for an ``nn.Module``)."""

    # No class-level attribute annotations: TorchScript would read them as the module's attribute types.

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^stem", blocks=r"^cells\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, self.classifier = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.global_pool.train(self.training)
        self.classifier.train(self.training)
