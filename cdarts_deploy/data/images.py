"""In-memory image arrays and the shuffled per-process loader, shared by the search and the retraining."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = ["ArrayImages", "shuffled_loader"]


class ArrayImages(Dataset):
    """uint8 HWC images held in memory, handed to the transform as uint8 CHW tensors or, with ``pil``, as PIL
    images (what ImageFolder hands over, for transforms that expect PIL)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Any = None, *, pil: bool = False) -> None:
        self.pil, self.transform = pil, transform
        # tensors: one NCHW view of the whole array, no copy per image
        self.images = images if pil else torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = Image.fromarray(self.images[i]) if self.pil else self.images[i]
        return (self.transform(img) if self.transform else img), int(self.labels[i])


def shuffled_loader(dataset: Dataset, batch_size: int, *, rank: int, world_size: int, seed: int, workers: int = 0,
                    pin_memory: bool = False, too_small: Callable[[int, int], Exception]) -> DataLoader:
    """Shuffled, dropping the last partial batch; the order depends only on (seed, epoch): call
    ``loader.sampler.set_epoch(e)`` every epoch.  ``too_small(images, per_process)`` is the caller's error for a
    part with fewer images per process than one batch."""
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
    if len(sampler) < batch_size:
        raise too_small(len(dataset), len(sampler))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True,
                      pin_memory=pin_memory, persistent_workers=False)
