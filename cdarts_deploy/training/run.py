"""A whole retraining run: model, optimizer, schedule, epochs, checkpoints and log, resumable exactly.

Exact resume: every epoch starts by seeding torch, numpy and ``random`` from (seed, epoch, rank), and the data
order depends only on (seed, epoch); the resume file holds the weights, optimizer, EMA and scaler state after
the last finished epoch.  A run stopped after epoch k and resumed therefore ends with the same weights, bit for
bit on the CPU, as one that was never stopped.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from timm.data import Mixup, resolve_data_config
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from backbones.depthwise_conv import use_faster_depthwise_backward
from cdarts_deploy import genotype as gt
from cdarts_deploy.data.distributed import DistContext
from cdarts_deploy.errors import UserError

from . import checkpoints as ck
from .data import TrainData, eval_loader, eval_transform, train_loader, train_transform
from .loop import StepSettings, evaluate, train_one_epoch
from .model import build_model, drop_path_at, network_args, set_drop_path
from .presets import TrainConfig, scaled_lr
from .report import plot_accuracy, write_log

__all__ = ["RunOptions", "RunResult", "seed_everything", "run_identity", "fit"]

RUNTIME_ONLY = ("workers",)  # config fields that may change between a run and its resumption


@dataclass
class RunOptions:
    out: Path
    ctx: DistContext
    amp_dtype: Optional[torch.dtype] = None
    channels_last: bool = False
    resume: bool = False
    stop_after: Optional[int] = None  # stop after this many finished epochs (as if killed there)
    progress: bool = True
    eval_batch_size: Optional[int] = None
    # called on rank 0 once everything is checked, before the first file is written
    on_start: Optional[Callable[[dict[str, Any]], None]] = None


@dataclass
class RunResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    best_top1: float = 0.0
    best_epoch: int = -1
    net_args: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_identity(genotype: gt.Genotype, cfg: TrainConfig, data: TrainData, net_args: dict[str, Any],
                 world_size: int) -> dict[str, Any]:
    """What must match for a resume to continue the same run."""
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUNTIME_ONLY}
    return dict(config=config, genotype=gt.to_dict(genotype), network=net_args, world_size=world_size,
                data=dict(dataset=data.dataset, classes=data.classes, train_images=len(data.train),
                          val_images=len(data.val)))


def _loss(cfg: TrainConfig, mixing: bool) -> nn.Module:
    if mixing:
        return SoftTargetCrossEntropy()  # Mixup already smooths the targets
    if cfg.label_smoothing:
        return LabelSmoothingCrossEntropy(cfg.label_smoothing)
    return nn.CrossEntropyLoss()


def _optimizer(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    extra: dict[str, Any] = {}
    if cfg.opt.lower().startswith("rmsprop"):
        extra["alpha"] = cfg.rmsprop_decay
    if cfg.opt_eps is not None:
        extra["eps"] = cfg.opt_eps
    try:
        return create_optimizer_v2(model, opt=cfg.opt, lr=lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                                   filter_bias_and_bn=not cfg.wd_on_norm_and_bias, **extra)
    except (AssertionError, ValueError, TypeError) as exc:
        raise UserError(f"--opt {cfg.opt}: {str(exc).splitlines()[0] if str(exc) else 'not usable'}") from None


def fit(genotype: gt.Genotype, cfg: TrainConfig, data: TrainData, opts: RunOptions) -> RunResult:
    """Train ``genotype`` on ``data`` with ``cfg``; rank 0 writes the run folder ``opts.out``."""
    ctx = opts.ctx
    net_args = network_args(genotype, cfg, data.num_classes, data.natural_layout)
    identity = run_identity(genotype, cfg, data, net_args, ctx.world_size)

    seed_everything(cfg.seed)  # the same initial weights on every process
    model = build_model(genotype, net_args, cfg).to(ctx.device)
    if ctx.device.type == "cpu" and opts.amp_dtype is None:
        use_faster_depthwise_backward(model)  # fp32 CPU training only: autocast keeps torch's own backward
    if opts.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data_cfg = resolve_data_config({}, model=model)
    small = net_args.get("layout") == "cifar" or isinstance(genotype, gt.Nb201Genotype)  # CIFAR-sized networks
    crop = cfg.train_crop or ("pad" if small else "rrc")
    data.train.transform = train_transform(cfg, data_cfg, crop)
    data.val.transform = eval_transform(data_cfg, cfg.crop_pct)
    pin = ctx.device.type == "cuda"
    train_dl = train_loader(data.train, cfg.batch_size, rank=ctx.rank, world_size=ctx.world_size, seed=cfg.seed,
                            workers=cfg.workers, pin_memory=pin)
    val_dl = eval_loader(data.val, opts.eval_batch_size or cfg.batch_size, rank=ctx.rank,
                         world_size=ctx.world_size, workers=cfg.workers, pin_memory=pin)

    optimizer = _optimizer(model, cfg, scaled_lr(cfg, ctx.world_size))
    scheduler, _ = create_scheduler_v2(optimizer, sched=cfg.sched, num_epochs=cfg.epochs,
                                       warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr,
                                       step_on_epochs=False, updates_per_epoch=len(train_dl))
    mixing = cfg.mixup > 0 or cfg.cutmix > 0
    mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                  num_classes=data.num_classes) if mixing else None
    loss_fn = _loss(cfg, mixing).to(ctx.device)
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.model_ema else None
    scaler = torch.amp.GradScaler(ctx.device.type) if opts.amp_dtype == torch.float16 else None

    result = RunResult(net_args=net_args)
    start_epoch = 0
    resume_path = opts.out / "resume.pth"
    if opts.resume and resume_path.is_file():
        doc = ck.load_resume(resume_path, identity)
        ck.restore_resume(doc, resume_path, model, optimizer, ema, scaler)
        start_epoch = int(doc["epoch"])
        result.records = list(doc["records"])
        result.best_top1, result.best_epoch = float(doc["best"]["top1"]), int(doc["best"]["epoch"])

    if ctx.is_main and opts.on_start is not None:
        opts.on_start(net_args)
    train_model: nn.Module = model
    if ctx.world_size > 1:
        train_model = DistributedDataParallel(model, device_ids=[ctx.device.index] if pin else None)
    settings = StepSettings(ctx.device, aux_weight=cfg.aux_weight, grad_clip=cfg.grad_clip,
                            amp_dtype=opts.amp_dtype, channels_last=opts.channels_last,
                            progress=opts.progress and ctx.is_main)
    end = cfg.epochs if opts.stop_after is None else min(cfg.epochs, opts.stop_after)
    for epoch in range(start_epoch, end):
        seed_everything(cfg.seed * 100_003 + epoch * 1_009 + ctx.rank)
        train_dl.sampler.set_epoch(epoch)
        drop = drop_path_at(cfg, epoch)
        set_drop_path(model, drop)
        stats = train_one_epoch(train_model, train_dl, optimizer, loss_fn, epoch=epoch, settings=settings,
                                scheduler=scheduler, mixup=mixup, ema=ema, scaler=scaler,
                                desc=f"epoch {epoch + 1}/{cfg.epochs}")
        judged = ema.module if ema is not None else model  # the weights that are evaluated and saved
        metrics = evaluate(judged, val_dl, settings, desc=f"val {epoch + 1}/{cfg.epochs}")
        record = dict(epoch=epoch + 1, drop_path=drop, **stats, **metrics)
        result.records.append(record)
        improved = metrics["top1"] > result.best_top1 or result.best_epoch < 0
        if improved:
            result.best_top1, result.best_epoch = metrics["top1"], epoch + 1
        if ctx.is_main:
            weights = ck.deploy_state_dict(judged)
            ck.save_state(opts.out / "last.pth", weights)
            if improved:
                ck.save_state(opts.out / "best.pth", weights)
            ck.save_resume(resume_path, identity=identity, epoch=epoch + 1, model=model, optimizer=optimizer,
                           ema=ema, scaler=scaler, best=dict(top1=result.best_top1, epoch=result.best_epoch),
                           records=result.records)
            write_log(opts.out / "log.jsonl", result.records)
            plot_accuracy(opts.out / "accuracy.png", result.records, title=genotype.name or "")
        ctx.barrier()
    set_drop_path(model, 0.0)
    return result
