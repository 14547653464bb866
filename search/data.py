"""Search data: CIFAR python-pickle batches and ImageFolder trees, split into *train* and *val* parts.

* CIFAR-10/100: the python batch directory as distributed by its authors
  (``cifar-10-batches-py/data_batch_1..5`` or ``cifar-100-python/train``); the
  training images are split into a first part (*train*, for w_S) and the rest
  (*val*, for alpha and w_E), half and half by default.  The batch files are
  pickles, read by :mod:`cdarts_deploy.data.cifar` (an unpickler that admits
  nothing but numpy arrays and plain containers).
* ImageFolder: ``ROOT/<class>/<image>`` (or ``ROOT/train/<class>/...``); per class,
  a seeded shuffle takes ``train_fraction`` of its images for *train* and another,
  disjoint ``val_fraction`` for *val*, so both parts cover every class.

Nothing is downloaded.  Every problem raises :class:`SearchInputError` with one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import v2

from backbones.pretrained import CIFAR_MEAN, CIFAR_STD
from cdarts_deploy.data import cifar
from cdarts_deploy.data.distributed import DistContext
from cdarts_deploy.data.image_files import IMAGE_SUFFIXES
from cdarts_deploy.data.image_reader import image_folder
from cdarts_deploy.data.images import ArrayImages, shuffled_loader
from cdarts_deploy.genotype import LAYOUT_DEFAULTS

from .errors import SearchInputError

DATASETS = ("cifar10", "cifar100", "imagefolder")

_CIFAR_LAYOUT = {name: cifar.num_classes(name) for name in cifar.CIFAR_DATASETS}  # dataset -> classes


# ----- CIFAR pickles: read by the one safe reader (cdarts_deploy.data.cifar) ---------------------------


def find_cifar_dir(root: Path, dataset: str) -> Path:
    try:
        return cifar.find_cifar_dir(root, dataset)
    except cifar.CifarError as exc:
        raise SearchInputError(str(exc)) from None


def load_cifar(root: str | Path, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Training images as uint8 ``[N, 32, 32, 3]`` and int64 labels."""
    try:
        return cifar.load_cifar(root, dataset, "train")
    except cifar.CifarError as exc:
        raise SearchInputError(str(exc)) from None


# ----- datasets --------------------------------------------------------------------------------------


def cifar_transform(size: int = 32) -> Any:
    ops = [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()]
    if size != 32:
        ops.append(v2.Resize(size, antialias=True))
    return v2.Compose(ops + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(CIFAR_MEAN, CIFAR_STD)])


def imagefolder_transform(size: int) -> Any:
    return v2.Compose([
        v2.RandomResizedCrop(size, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    ])


def balanced_split(
    targets: Sequence[int], train_fraction: float, val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Per class, a seeded shuffle; the first ``train_fraction`` go to *train*, the next ``val_fraction`` to *val*."""
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        rng.shuffle(idx)
        n_train = max(1, round(train_fraction * len(idx)))
        n_val = max(1, round(val_fraction * len(idx)))
        if n_train + n_val > len(idx):
            raise SearchInputError(
                f"class {int(c)} has {len(idx)} images, too few for a {train_fraction:g}/{val_fraction:g} train/val "
                "sample; add images or raise --train-fraction/--val-fraction"
            )
        train.extend(idx[:n_train].tolist())
        val.extend(idx[n_train:n_train + n_val].tolist())
    return sorted(train), sorted(val)


@dataclass
class SearchData:
    train: Dataset
    val: Dataset
    num_classes: int
    layout: str  # the network layout that fits the images: "cifar" or "imagenet"
    input_size: int


def build_search_data(
    dataset: str,
    root: str | Path,
    *,
    train_portion: float = 0.5,
    subset: int | None = None,
    num_classes: int | None = None,
    train_fraction: float = 0.1,
    val_fraction: float = 0.1,
    input_size: int | None = None,
    seed: int = 0,
    bad_images: str = "fail",
) -> SearchData:
    if dataset not in DATASETS:
        raise SearchInputError(f"unknown --dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    root = Path(root)
    if dataset in _CIFAR_LAYOUT:
        images, labels = load_cifar(root, dataset)
        if subset:
            images, labels = images[:subset], labels[:subset]
        split = int(round(train_portion * len(labels)))
        if split < 1 or split >= len(labels):
            raise SearchInputError(f"--train-portion {train_portion} leaves no images for train or val "
                                   f"({len(labels)} images); use a value between 0 and 1")
        size = input_size or LAYOUT_DEFAULTS["cifar"]["input_size"]
        tf = cifar_transform(size)
        full = ArrayImages(images, labels, tf)
        return SearchData(Subset(full, range(split)), Subset(full, range(split, len(labels))),
                          _CIFAR_LAYOUT[dataset], "cifar", size)
    return _imagefolder(root, num_classes, train_fraction, val_fraction,
                        input_size or LAYOUT_DEFAULTS["imagenet"]["input_size"], seed, bad_images)


def _imagefolder(root: Path, num_classes: int | None, train_fraction: float, val_fraction: float,
                 size: int, seed: int, bad_images: str = "fail") -> SearchData:
    if not root.is_dir():
        raise SearchInputError(
            f"{root}: no such directory; pass --data-root with an ImageFolder tree ROOT/<class>/<image>")
    if (root / "train").is_dir():
        root = root / "train"
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise SearchInputError(f"{root}: no class subdirectories; expected ROOT/<class>/<image> (ImageFolder layout)")
    if num_classes is not None:
        if len(classes) < num_classes:
            raise SearchInputError(f"{root}: found {len(classes)} class folders, fewer than --num-classes "
                                   f"{num_classes}; lower --num-classes or point at a fuller tree")
        classes = classes[:num_classes]
    keep = set(classes)
    try:
        # the one image reader: hidden and ._ files ignored, every image decoded once, bad files named
        folder = image_folder(root, bad_images, "--data-root", transform=imagefolder_transform(size),
                              keep_class=keep.__contains__, fix="remove or replace it")
    except (FileNotFoundError, RuntimeError) as exc:
        raise SearchInputError(f"{root}: {str(exc).splitlines()[0]}; every class folder needs at least one image "
                               f"({', '.join(IMAGE_SUFFIXES)})") from None
    if len(folder.classes) != len(classes):
        raise SearchInputError(f"{root}: only {len(folder.classes)} of {len(classes)} class folders contain images; "
                               "remove the empty ones or add images")
    train, val = balanced_split(folder.targets, train_fraction, val_fraction, seed)
    return SearchData(Subset(folder, train), Subset(folder, val), len(classes), "imagenet", size)


def make_loader(dataset: Dataset, batch_size: int, ctx: DistContext, seed: int, workers: int = 0) -> DataLoader:
    """A loader whose order depends only on (seed, epoch): call ``loader.sampler.set_epoch(e)`` each epoch."""
    def too_small(images: int, per_process: int) -> SearchInputError:
        return SearchInputError(f"a data part of {images} images gives {per_process} per process, fewer than "
                                f"--batch-size {batch_size}; lower --batch-size or use more data")

    return shuffled_loader(dataset, batch_size, rank=ctx.rank, world_size=ctx.world_size, seed=seed, workers=workers,
                           pin_memory=ctx.device.type == "cuda", too_small=too_small)
