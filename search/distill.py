"""Introspective distillation (Eq. 9-10): embedding heads and the multi-level soft-target loss.

Space-agnostic: both the cell search and the chain search feed it lists of logits,
one per level (stage embeddings, then the final classifier), from the student
(search network) and the teacher (evaluation network).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

DISTILL_KINDS = ("kl", "cosine", "mse", "smooth_l1")


def soft_target_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """T^2 / N * sum_i KL(p_teacher || q_student) with both distributions softened by T."""
    log_q = F.log_softmax(student / temperature, dim=1)
    log_p = F.log_softmax(teacher / temperature, dim=1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean") * temperature**2


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "kl",
                 temperature: float = 2.0) -> torch.Tensor:
    """One level of distillation; ``kind`` picks the soft-target KL or one of the reference's feature losses."""
    if kind == "kl":
        return soft_target_kl(student, teacher, temperature)
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student, teacher, dim=1)).mean()
    if kind == "mse":
        return F.mse_loss(student, teacher)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(student, teacher)
    raise ValueError(f"unknown distillation loss {kind!r}; expected one of {', '.join(DISTILL_KINDS)}")


class EmbeddingHead(nn.Module):
    """Maps a stage's feature map to class logits (ReLU, pool, 1x1 to 128, 2x2 to 768, linear).

    The pooling is adaptive (to 2x2) rather than a fixed 5x5 window so that one
    head works for every input size, including the tiny ones of smoke runs.
    """

    def __init__(self, in_channels: int, num_classes: int, mid: int = 128, embed: int = 768) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(in_channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, embed, 2, bias=False),
            nn.BatchNorm2d(embed),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(embed, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MultiLevelDistillation(nn.Module):
    """The sum over levels of per-level distillation losses, with fixed level weights (paper Eq. 9-10).

    The weights are a buffer, not a parameter: a convex combination trained on the
    losses it weighs would move all mass to the smallest level and collapse the
    multi-level distillation to one level.  Uniform by default (the paper's plain sum,
    divided by the level count so lambda keeps its scale for any depth).
    """

    def __init__(self, levels: int, kind: str = "kl", temperature: float = 2.0,
                 weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if kind not in DISTILL_KINDS:
            raise ValueError(f"unknown distillation loss {kind!r}; expected one of {', '.join(DISTILL_KINDS)}")
        self.kind = kind
        self.temperature = temperature
        w = torch.full((levels,), 1.0 / levels) if not weights else torch.tensor([float(v) for v in weights])
        if w.numel() != levels or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError(f"level weights {list(weights or [])}: expected {levels} non-negative numbers, "
                             "not all zero")
        self.register_buffer("weights", w / w.sum())

    def level_weights(self) -> torch.Tensor:
        return self.weights

    def level_losses(self, student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(student) != len(teacher) or len(student) != self.weights.numel():
            raise ValueError(
                f"got {len(student)} student and {len(teacher)} teacher levels, expected {self.weights.numel()}"
            )
        return torch.stack([distill_loss(s, t, self.kind, self.temperature) for s, t in zip(student, teacher)])

    def forward(self, student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
        return (self.weights * self.level_losses(student, teacher)).sum()
