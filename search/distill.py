"""Introspective distillation (Eq. 9-10): embedding heads and the multi-level soft-target loss.

Space-agnostic: every space taps one feature map per network stage in both networks; one set of
embedding heads (:class:`EmbeddingHeads`), shared by the two networks, projects each stage's map to
class logits, and the loss compares the student's (search network) and the teacher's (evaluation
network) logits level by level.

The heads are projections, never trained on the distillation loss: a head that learns to shrink the
loss can drive it to zero (identical outputs for any input) while the architecture stays where it
was.  :meth:`EmbeddingHeads.project` therefore passes gradient to the features only.
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

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The head's output with its parameters held constant: the gradient reaches ``x`` only, and the
        BatchNorm running statistics are left as they are (training mode normalises with batch statistics)."""
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                x = F.conv2d(x, m.weight.detach(), None, m.stride, m.padding)
            elif isinstance(m, nn.BatchNorm2d):
                x = F.batch_norm(x, m.running_mean, m.running_var, m.weight.detach(), m.bias.detach(),
                                 training=m.training, momentum=0.0, eps=m.eps)
            else:
                x = m(x)
        return F.linear(x, self.classifier.weight.detach(), self.classifier.bias.detach())


class EmbeddingHeads(nn.ModuleList):
    """One :class:`EmbeddingHead` per stage tap, shared by the search and the evaluation network.

    :meth:`project` gives the distillation levels (no gradient to the heads); the heads learn only
    through :meth:`classification_loss`, the optional cross-entropy of the evaluation network's
    stage logits.  Without it they stay fixed random projections.
    """

    def __init__(self, channels: Sequence[int], num_classes: int, mid: int = 128, embed: int = 768) -> None:
        super().__init__(EmbeddingHead(c, num_classes, mid, embed) for c in channels)
        self.channels = [int(c) for c in channels]

    def _check(self, feats: Sequence[torch.Tensor]) -> None:
        got = [int(f.shape[1]) for f in feats]
        if got != self.channels:
            raise ValueError(f"stage features of {got} channels; the embedding heads take {self.channels}")

    def project(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        self._check(feats)
        return [h.project(f) for h, f in zip(self, feats)]

    def classification_loss(self, feats: Sequence[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        self._check(feats)
        return torch.stack([F.cross_entropy(h(f), y) for h, f in zip(self, feats)]).mean()


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
