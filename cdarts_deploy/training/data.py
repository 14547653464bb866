"""Training and validation images from disk: CIFAR-10/100 python batches or an ImageFolder ``train/`` + ``val/``.

Transforms come from timm (``create_transform``, AutoAugment) and torchvision (CIFAR's padded random crop, which
timm does not provide); cutout is the one transform written here.  Normalisation, interpolation and the
evaluation crop are the model's ``pretrained_cfg`` values, so training, evaluation and the exported model agree.
Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image
from timm.data import auto_augment_transform, create_transform
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from cdarts_deploy.data import cifar
from cdarts_deploy.data.image_reader import image_folder
from cdarts_deploy.data.images import ArrayImages, shuffled_loader
from cdarts_deploy.errors import UserError

from .presets import TrainConfig

__all__ = ["DataError", "DATASETS", "TrainData", "detect_dataset", "read_datasets", "Cutout", "train_transform",
           "eval_transform", "train_loader", "eval_loader"]

DATASETS = ("auto", "cifar10", "cifar100", "imagefolder")


class DataError(UserError):
    """Training data that is missing or does not fit the run."""


@dataclass
class TrainData:
    dataset: str  # cifar10, cifar100 or imagefolder
    train: Dataset
    val: Dataset
    num_classes: int
    classes: list[str]
    natural_layout: str  # the cell layout that suits the images: cifar (32x32) or imagenet


def detect_dataset(root: Path) -> str:
    """``cifar10``/``cifar100`` when ``root`` holds their batch files, else ``imagefolder``."""
    for name in cifar.CIFAR_DATASETS:
        try:
            cifar.find_cifar_dir(root, name, "train")
            return name
        except cifar.CifarError:
            continue
    return "imagefolder"


def _image_folder(root: Path, bad_images: str) -> ImageFolder:
    try:
        folder = image_folder(root, bad_images, "--data-root")
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{root}: {str(exc).splitlines()[0]}; every class folder needs at least one image") from None
    empty = sorted(set(folder.classes) - {folder.classes[t] for t in folder.targets})
    if empty:  # every file of a class was skipped as bad
        raise DataError(f"{root}/{empty[0]}: no usable image left; add images or remove the class folder")
    return folder


def read_datasets(root: str | Path, dataset: str = "auto", *, need_train: bool = True,
                  bad_images: str = "fail") -> TrainData:
    """The training and validation sets under ``root`` (transforms are set later, once the model is known).

    CIFAR: the training batches and the test batch.  ImageFolder: ``root/train/<class>/`` and ``root/val/<class>/``
    with the same class folders, read by :mod:`cdarts_deploy.data.image_reader` (``bad_images``: its policy).
    """
    root = Path(root)
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    if not root.is_dir():
        raise DataError(f"--data-root {root}: no such directory")
    if dataset == "auto":
        dataset = detect_dataset(root)
    if dataset in cifar.CIFAR_DATASETS:
        try:
            if need_train:
                train_x, train_y = cifar.load_cifar(root, dataset, "train")
            else:
                train_x, train_y = np.zeros((0, 32, 32, 3), np.uint8), np.zeros(0, np.int64)
            val_x, val_y = cifar.load_cifar(root, dataset, "test")
        except cifar.CifarError as exc:
            raise DataError(str(exc)) from None
        k = cifar.num_classes(dataset)
        return TrainData(dataset, ArrayImages(train_x, train_y, pil=True), ArrayImages(val_x, val_y, pil=True), k,
                         [str(i) for i in range(k)], "cifar")
    parts = {}
    for part in ("train", "val") if need_train else ("val",):
        if not (root / part).is_dir():
            raise DataError(f"{root}: no {part}/ folder; expected an ImageFolder tree {root}/{part}/<class>/<image> "
                            "(or the CIFAR python batches)")
        parts[part] = _image_folder(root / part, bad_images)
    val = parts["val"]
    train = parts.get("train", val)
    if train.classes != val.classes:
        raise DataError(f"{root}: train/ and val/ hold different class folders "
                        f"({len(train.classes)} vs {len(val.classes)}); both need the same classes")
    if need_train and len(val.classes) < 2:  # one class: the loss is zero from the first step, nothing is learnt
        raise DataError(f"{root}: one class folder ({val.classes[0]}); a classifier needs at least 2 classes")
    with Image.open(val.samples[0][0]) as first:  # small images suit the CIFAR layout
        layout = "cifar" if max(first.size) <= 64 else "imagenet"
    return TrainData("imagefolder", train, val, len(val.classes), list(val.classes), layout)


class Cutout:
    """Zero one ``size`` x ``size`` square (clipped at the border) of a CHW tensor, centred uniformly at random."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        cy, cx = int(torch.randint(0, h, ())), int(torch.randint(0, w, ()))
        y0, y1 = max(0, cy - self.size // 2), min(h, cy + self.size // 2)
        x0, x1 = max(0, cx - self.size // 2), min(w, cx + self.size // 2)
        img = img.clone()
        img[..., y0:y1, x0:x1] = 0
        return img

    def __repr__(self) -> str:
        return f"Cutout(size={self.size})"


def train_transform(cfg: TrainConfig, data_cfg: dict[str, Any], crop: str) -> Any:
    """The training transform: ``crop`` ``pad`` (CIFAR style) or ``rrc`` (timm's ImageNet recipe)."""
    size = data_cfg["input_size"][-1]
    mean, std, interp = data_cfg["mean"], data_cfg["std"], data_cfg["interpolation"]
    if crop == "rrc":
        tf = create_transform(size, is_training=True, hflip=cfg.hflip, color_jitter=cfg.color_jitter or None,
                              auto_augment=cfg.auto_augment, interpolation=interp, mean=mean, std=std)
        return T.Compose([tf, Cutout(cfg.cutout)]) if cfg.cutout else tf
    ops: list[Any] = [T.Resize(size, interpolation=T.InterpolationMode(interp)),
                      T.RandomCrop(size, padding=max(1, size // 8))]
    if cfg.hflip:
        ops.append(T.RandomHorizontalFlip(cfg.hflip))
    if cfg.color_jitter:
        ops.append(T.ColorJitter(cfg.color_jitter, cfg.color_jitter, cfg.color_jitter))
    if cfg.auto_augment:
        hparams = dict(translate_const=int(size * 0.45), img_mean=tuple(round(255 * m) for m in mean))
        ops.append(auto_augment_transform(cfg.auto_augment, hparams))
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    if cfg.cutout:
        ops.append(Cutout(cfg.cutout))
    return T.Compose(ops)


def eval_transform(data_cfg: dict[str, Any], crop_pct: Optional[float] = None) -> Any:
    """Resize and centre crop (timm's evaluation transform) with the model's normalisation."""
    return create_transform(data_cfg["input_size"][-1], is_training=False, interpolation=data_cfg["interpolation"],
                            mean=data_cfg["mean"], std=data_cfg["std"],
                            crop_pct=crop_pct if crop_pct is not None else data_cfg.get("crop_pct", 0.875))


def train_loader(dataset: Dataset, batch_size: int, *, rank: int, world_size: int, seed: int, workers: int,
                 pin_memory: bool = False) -> DataLoader:
    """Shuffled, dropping the last partial batch; the order depends only on (seed, epoch): call
    ``loader.sampler.set_epoch(e)`` every epoch."""
    def too_small(images: int, per_process: int) -> DataError:
        return DataError(f"the training set has {images} images, {per_process} per process: fewer than "
                         f"--batch-size {batch_size}; lower --batch-size or add images")

    return shuffled_loader(dataset, batch_size, rank=rank, world_size=world_size, seed=seed, workers=workers,
                           pin_memory=pin_memory, too_small=too_small)


def eval_loader(dataset: Dataset, batch_size: int, *, rank: int = 0, world_size: int = 1, workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """Every image exactly once over all processes (rank r takes images r, r + world, ...), in order."""
    part = dataset if world_size == 1 else Subset(dataset, range(rank, len(dataset), world_size))
    return DataLoader(part, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin_memory)
