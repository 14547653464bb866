"""One training epoch and one evaluation pass, on timm's parts (Mixup/CutMix, losses, scheduler, EMA, meters).

The auxiliary tower's loss is added only in training (the network returns ``(logits, aux_logits)`` in train
mode when it has a tower); evaluation runs the network in eval mode, where drop path is off and the tower unused.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from timm.utils import AverageMeter, accuracy, dispatch_clip_grad
from torch import nn
from tqdm import tqdm

__all__ = ["StepSettings", "train_one_epoch", "evaluate"]


@dataclass
class StepSettings:
    device: torch.device
    aux_weight: float = 0.0
    grad_clip: Optional[float] = None
    amp_dtype: Optional[torch.dtype] = None  # None: float32
    channels_last: bool = False
    progress: bool = True


def _autocast(s: StepSettings) -> Any:
    if s.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(s.device.type, dtype=s.amp_dtype)


def _to_device(images: torch.Tensor, targets: torch.Tensor, s: StepSettings) -> tuple[torch.Tensor, torch.Tensor]:
    images = images.to(s.device, non_blocking=True)
    if s.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets.to(s.device, non_blocking=True)


def train_one_epoch(model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer, loss_fn: Callable, *,
                    epoch: int, settings: StepSettings, scheduler: Any = None, mixup: Any = None, ema: Any = None,
                    scaler: Any = None, desc: str = "train") -> dict[str, float]:
    """Train one epoch; returns ``loss`` (with the tower's share), ``images_per_s`` and the last ``lr``."""
    s = settings
    model.train()
    losses = AverageMeter()
    steps = len(loader)
    seen, start = 0, time.perf_counter()
    bar = tqdm(loader, desc=desc, leave=False, disable=not s.progress, dynamic_ncols=True)
    for i, (images, targets) in enumerate(bar):
        images, targets = _to_device(images, targets, s)
        if mixup is not None:
            images, targets = mixup(images, targets)
        with _autocast(s):
            out = model(images)
            if isinstance(out, tuple):  # (logits, aux_logits): training with the auxiliary tower
                logits, aux_logits = out
                loss = loss_fn(logits, targets) + s.aux_weight * loss_fn(aux_logits, targets)
            else:
                loss = loss_fn(out, targets)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if s.grad_clip:
                scaler.unscale_(optimizer)
                dispatch_clip_grad(model.parameters(), s.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if s.grad_clip:
                dispatch_clip_grad(model.parameters(), s.grad_clip)
            optimizer.step()
        if ema is not None:
            ema.update(getattr(model, "module", model), step=epoch * steps + i)  # the bare network, not DDP
        if scheduler is not None:
            scheduler.step_update(num_updates=epoch * steps + i + 1)
        losses.update(loss.item(), images.shape[0])
        seen += images.shape[0]
        bar.set_postfix(loss=f"{losses.avg:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    elapsed = time.perf_counter() - start
    return dict(train_loss=_mean_over_processes(losses.sum, losses.count, s.device),
                images_per_s=_sum_over_processes(seen, s.device) / max(elapsed, 1e-9),
                lr=optimizer.param_groups[0]["lr"])


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, settings: StepSettings, *, desc: str = "val",
             keep_predictions: bool = False) -> dict[str, Any]:
    """``loss`` (cross-entropy), ``top1``, ``top5`` in percent over all processes; ``predictions`` (this
    process's top-1 classes in loader order) when asked."""
    s = settings
    was_training = model.training
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    totals = torch.zeros(4, dtype=torch.float64, device=s.device)  # loss, top1 hits, top5 hits, images
    predictions = []
    for images, targets in tqdm(loader, desc=desc, leave=False, disable=not s.progress, dynamic_ncols=True):
        images, targets = _to_device(images, targets, s)
        with _autocast(s):
            logits = model(images)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top1, top5 = accuracy(logits, targets, topk=(1, k))
        n = images.shape[0]
        # timm's accuracy() is a float32 percentage of this batch: back to whole hits
        totals += torch.tensor([loss_fn(logits, targets).item(), round(top1.item() * n / 100),
                                round(top5.item() * n / 100), n],
                               dtype=torch.float64, device=s.device)
        if keep_predictions:
            predictions.append(logits.argmax(1).cpu())
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
    model.train(was_training)
    loss, hits1, hits5, n = totals.tolist()
    result: dict[str, Any] = dict(val_loss=loss / max(n, 1), top1=100 * hits1 / max(n, 1),
                                  top5=100 * hits5 / max(n, 1), images=int(n))
    if keep_predictions:
        result["predictions"] = torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long)
    return result


def _sum_over_processes(value: float, device: torch.device) -> float:
    if not (dist.is_available() and dist.is_initialized()):
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def _mean_over_processes(total: float, count: int, device: torch.device) -> float:
    return _sum_over_processes(total, device) / max(_sum_over_processes(count, device), 1)
