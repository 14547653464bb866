"""Top-1 / top-5 of a trained network in PyTorch and of its exported ONNX file on the same images, and how often
the two predict the same class (the exported model must agree with its source on practically every image)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from tqdm import tqdm

from cdarts_deploy.deploy import ort
from cdarts_deploy.errors import UserError

__all__ = ["AgreementError", "MIN_AGREEMENT", "OnnxScore", "evaluate_onnx", "agreement", "check_agreement"]

MIN_AGREEMENT = 0.995  # fraction of images on which PyTorch and ONNX Runtime must pick the same class


class AgreementError(UserError):
    """The ONNX model does not reproduce the PyTorch model's predictions."""

    exit_code = 1


@dataclass
class OnnxScore:
    top1: float
    top5: float
    images: int
    predictions: torch.Tensor


def evaluate_onnx(onnx_path: str | os.PathLike, loader: Any, *, threads: Optional[int] = None,
                  num_classes: Optional[int] = None, progress: bool = True) -> OnnxScore:
    """Run the ONNX file (the project's ONNX Runtime session) over ``loader``."""
    sess = ort.session(onnx_path, threads=threads)
    hits1 = hits5 = n = 0
    preds = []
    for images, targets in tqdm(loader, desc="onnx", leave=False, disable=not progress, dynamic_ncols=True):
        try:
            logits = ort.run(sess, images.numpy().astype(np.float32))[0]
        except Exception as exc:  # onnxruntime raises its own types for inputs that do not fit the graph
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise AgreementError(f"{onnx_path} cannot run on these images ({first[:160]}); export the same network "
                                 "with the same --input-size") from None
        if logits.ndim != 2 or (num_classes is not None and logits.shape[1] != num_classes):
            raise AgreementError(f"{onnx_path} outputs {tuple(logits.shape)}, expected (batch, {num_classes}) "
                                 "logits; it is the export of another network")
        t = torch.from_numpy(logits)
        top = t.topk(min(5, t.shape[1]), dim=1).indices
        hits1 += int((top[:, 0] == targets).sum())
        hits5 += int((top == targets[:, None]).any(1).sum())
        n += len(targets)
        preds.append(top[:, 0])
    return OnnxScore(100 * hits1 / max(n, 1), 100 * hits5 / max(n, 1), n,
                     torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long))


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of positions where the two prediction vectors hold the same class."""
    if a.shape != b.shape:
        raise AgreementError(f"prediction counts differ ({a.numel()} vs {b.numel()})")
    return float((a == b).float().mean()) if a.numel() else 1.0


def check_agreement(fraction: float, minimum: float = MIN_AGREEMENT, what: str = "the ONNX model") -> None:
    if fraction < minimum:
        raise AgreementError(f"{what} predicts the same class as PyTorch on only {100 * fraction:.2f}% of the "
                             f"images (at least {100 * minimum:.2f}% required); it is not an export of this checkpoint")
