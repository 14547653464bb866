"""Labelled images written as an ImageFolder tree with a stratified, seeded ``train/`` / ``val/`` split: what the
data-preparation tools (``tools/prepare_digits.py``, ``tools/prepare_mnist.py``) share."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.model_selection import train_test_split

from cdarts_deploy.atomic_files import write_bytes
from cdarts_deploy.errors import UserError


def first_per_class(labels: np.ndarray, per_class: int | None) -> list[int]:
    """Indices of the first ``per_class`` images of every label (all of them when ``per_class`` is None)."""
    index = list(range(len(labels)))
    if not per_class:
        return index
    kept: dict[int, list[int]] = {}
    for i in index:
        kept.setdefault(int(labels[i]), []).append(i)
    return sorted(i for members in kept.values() for i in members[:per_class])


def split(labels: np.ndarray, val_fraction: float, per_class: int | None, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) indices: a stratified, seeded split of the first ``per_class`` images of every label."""
    index = first_per_class(labels, per_class)
    try:
        train, val = train_test_split(index, test_size=val_fraction, stratify=labels[index], random_state=seed)
    except ValueError:  # a class too small to have images on both sides
        smallest = int(np.unique(labels[index], return_counts=True)[1].min()) if index else 0
        raise UserError(f"cannot split {len(index)} images (the smallest class has {smallest}) with --val-fraction "
                        f"{val_fraction} so that every class is in train/ and val/; raise --per-class or change "
                        "--val-fraction") from None
    return list(train), list(val)


def write_image_folder(out: Path, labels: np.ndarray, parts: dict[str, list[int]], png: Callable[[int], bytes]) -> None:
    """Write ``out/<part>/<label>/<index>.png`` for every index of every part (``png(i)`` encodes image ``i``; each
    file written atomically).  The same arguments rewrite the same files."""
    for part, chosen in parts.items():
        for i in sorted(chosen):
            folder = out / part / str(int(labels[i]))
            folder.mkdir(parents=True, exist_ok=True)
            write_bytes(folder / f"{i:04d}.png", png(i))
