"""What one search epoch measured: running per-sample means of its losses and accuracies, and the line printed
for it."""

from __future__ import annotations

from typing import Any

import torch


class Meter:
    """Running sums of losses and correct predictions, averaged per sample.

    Tensor values stay on their device until :meth:`means`: no host synchronisation per step.
    """

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def add(self, key: str, value: float | torch.Tensor, n: int) -> None:
        if isinstance(value, torch.Tensor):
            value = value.detach().float()
        self.sums[key] = self.sums.get(key, 0.0) + value * n
        self.counts[key] = self.counts.get(key, 0) + n

    def add_acc(self, key: str, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.add(key, (logits.detach().argmax(1) == y).float().mean(), y.numel())

    def means(self) -> dict[str, float]:
        return {k: float(self.sums[k]) / max(1, self.counts[k]) for k in self.sums}


def epoch_summary(row: dict[str, Any]) -> str:
    """The one line printed per epoch: accuracies, losses, the child's cost and the epoch's seconds."""
    parts = [f"epoch {row['epoch']} [{row['phase']}]", f"lr {row['lr']:.4g}"]
    for key in ("train_acc", "val_acc_search", "val_acc_eval", "distill_loss"):
        if key in row:
            parts.append(f"{key} {row[key]:.3f}")
    if "skip_normal" in row:
        parts.append(f"skip(normal) {row['skip_normal']}")
    if "child_madds" in row:
        parts.append(f"{row['child_madds'] / 1e6:.1f}M MAdds")
    if "child_latency_ms" in row:
        parts.append(f"{row['child_latency_ms']:.2f} ms")
    if "bench_index" in row:  # NAS-Bench-201: the derived architecture and its benchmark accuracy
        test = row.get("bench_cifar10_test")
        parts.append(f"nb201 #{row['bench_index']}" + (f" cifar10 test {test:.2f}" if test is not None else ""))
    parts.append(f"{row['seconds']:.1f}s")
    return " | ".join(parts)
