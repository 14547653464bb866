"""Training recipes: one :class:`TrainConfig` field per command-line flag, and the paper's presets.

* ``paper-cifar`` -- Sec. 4.3 (following PDARTS): C=36, 20 cells, 600 epochs, batch 128, SGD momentum 0.9,
  lr 0.025 cosine to 0, weight decay 5e-4 (the value Sec. 4.3 states), drop path 0.3 on every operation but
  the identity, auxiliary tower weight 0.4, cutout 16.
* ``paper-imagenet`` -- Sec. 4.4: C=48, 14 cells, 250 epochs, SGD momentum 0.9, lr 0.5 cosine with 5 warm-up
  epochs, weight decay 3e-5, label smoothing 0.1, auxiliary 0.4.  The paper gives no retraining batch; the
  search on ImageNet used 1,024 (8 GPUs x 128), so lr 0.5 is taken to mean a global batch of 1,024 and is
  scaled linearly for other global batches (``lr_base_batch``).
* ``paper-chain`` -- Sec. 4.6 (CDARTS-a/b, "similar settings as EfficientNet"): 350 epochs, RMSProp (momentum
  0.9, decay 0.9; TensorFlow-style, eps 1e-3), weight decay 1e-5, dropout 0.2, lr 0.04 at the paper's global
  batch of 1,024 with 3 warm-up epochs and cosine, AutoAugment, weight EMA.
* ``cpu-smoke`` -- a tiny network for a few minutes on two CPU cores.

``lr`` is the rate at a global batch of ``lr_base_batch`` images; a run with global batch B uses
``lr * B / lr_base_batch`` (linear scaling rule).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Optional

from cdarts_deploy.options import option

__all__ = ["TrainConfig", "PRESETS", "preset_config", "scaled_lr"]




@dataclass
class TrainConfig:
    # network
    layout: Optional[str] = option(None, "cell genotypes: network layout cifar|imagenet (default: the data's)",
                               choices=("cifar", "imagenet"))
    width: Optional[int] = option(None, "cell genotypes: initial channels C")
    cells: Optional[int] = option(None, "cell genotypes: number of cells")
    input_size: Optional[int] = option(None, "image side (default: 32 for the cifar layout, 224 otherwise)")
    drop_path: float = option(0.0, "final drop-path probability (cell genotypes: ramped linearly from 0 over the "
                               "epochs, every operation but the identity)")
    drop_rate: float = option(0.0, "dropout before the classifier")
    aux_weight: float = option(0.0, "weight of the auxiliary tower's loss (cell genotypes; 0 = no tower)")
    # optimisation
    epochs: int = option(600, "training epochs")
    batch_size: int = option(128, "images per process and step")
    opt: str = option("sgd", "timm optimizer name (sgd, rmsproptf, adamw, ...)")
    lr: float = option(0.025, "learning rate at a global batch of --lr-base-batch")
    lr_base_batch: int = option(128, "global batch that --lr refers to (linear scaling)")
    momentum: float = option(0.9, "optimizer momentum")
    rmsprop_decay: float = option(0.9, "RMSProp squared-gradient decay (alpha)")
    opt_eps: Optional[float] = option(None, "optimizer epsilon (default: the optimizer's)")
    weight_decay: float = option(5e-4, "weight decay")
    wd_on_norm_and_bias: bool = option(True, "apply weight decay to BN and bias parameters too (DARTS reference "
                                         "training does)")
    sched: str = option("cosine", "timm scheduler", choices=("cosine", "tanh", "poly", "step", "multistep"))
    warmup_epochs: int = option(0, "linear warm-up epochs")
    warmup_lr: float = option(1e-5, "learning rate at the start of the warm-up")
    min_lr: float = option(0.0, "final learning rate")
    grad_clip: Optional[float] = option(5.0, "clip the gradient norm to this value (0: no clipping)")
    label_smoothing: float = option(0.0, "label smoothing")
    # data
    cutout: int = option(0, "cutout square side in pixels (0: none)")
    auto_augment: Optional[str] = option(None, "timm AutoAugment policy, e.g. original or rand-m9-mstd0.5")
    mixup: float = option(0.0, "mixup alpha (0: off)")
    cutmix: float = option(0.0, "cutmix alpha (0: off)")
    hflip: float = option(0.5, "horizontal flip probability")
    color_jitter: float = option(0.0, "colour jitter strength")
    train_crop: Optional[str] = option(None, "pad: random crop of the padded image (CIFAR style); rrc: random "
                                         "resized crop (default: pad for the cifar layout, rrc otherwise)",
                                   choices=("pad", "rrc"))
    crop_pct: Optional[float] = option(None, "evaluation centre-crop fraction (default: the model's)")
    workers: int = option(2, "data-loading worker processes per training process")
    # weights
    model_ema: bool = option(False, "keep an exponential moving average of the weights; it is evaluated and saved")
    ema_decay: float = option(0.9999, "EMA decay per step")
    seed: int = option(0, "seed of everything random (data order, augmentation, initialisation, drop path)")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


_CELL = dict(wd_on_norm_and_bias=True, grad_clip=5.0)

PRESETS: dict[str, dict[str, Any]] = {
    "paper-cifar": dict(
        _CELL, layout="cifar", width=36, cells=20, epochs=600, batch_size=128, opt="sgd", lr=0.025,
        lr_base_batch=128, momentum=0.9, weight_decay=5e-4, sched="cosine", min_lr=0.0, warmup_epochs=0,
        drop_path=0.3, aux_weight=0.4, cutout=16, train_crop="pad", hflip=0.5,
    ),
    "paper-imagenet": dict(
        _CELL, layout="imagenet", width=48, cells=14, epochs=250, batch_size=128, opt="sgd", lr=0.5,
        lr_base_batch=1024, momentum=0.9, weight_decay=3e-5, sched="cosine", min_lr=0.0, warmup_epochs=5,
        label_smoothing=0.1, aux_weight=0.4, drop_path=0.0, train_crop="rrc", hflip=0.5, color_jitter=0.4,
    ),
    "paper-chain": dict(
        epochs=350, batch_size=128, opt="rmsproptf", lr=0.04, lr_base_batch=1024, momentum=0.9,
        rmsprop_decay=0.9, opt_eps=1e-3, weight_decay=1e-5, wd_on_norm_and_bias=False, sched="cosine",
        warmup_epochs=3, warmup_lr=1e-6, min_lr=1e-5, drop_rate=0.2, auto_augment="original", model_ema=True,
        ema_decay=0.9998, grad_clip=None, train_crop="rrc", hflip=0.5, label_smoothing=0.1,
    ),
    "cpu-smoke": dict(
        _CELL, layout="cifar", width=8, cells=5, epochs=2, batch_size=16, opt="sgd", lr=0.05, lr_base_batch=16,
        momentum=0.9, weight_decay=5e-4, sched="cosine", drop_path=0.1, aux_weight=0.4, cutout=8,
        train_crop="pad", workers=0,
    ),
}


def preset_config(name: str, **overrides: Any) -> TrainConfig:
    """The config of preset ``name`` with ``overrides`` (``None`` values are ignored)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    values = dict(PRESETS[name])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)


def scaled_lr(cfg: TrainConfig, world_size: int) -> float:
    """``cfg.lr`` scaled to this run's global batch."""
    return cfg.lr * cfg.batch_size * world_size / cfg.lr_base_batch
