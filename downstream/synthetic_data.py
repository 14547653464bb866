"""Tiny datasets in the real COCO and Cityscapes layouts, for smoke runs and tests.

Images are noise with a few solid rectangles; the annotations describe those
rectangles, so a detector or segmentor has something learnable and the
metrics (pycocotools' COCOeval, mmseg's IoU) run on genuine files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from cdarts_deploy.atomic_files import atomic_path, write_text

__all__ = ["make_tiny_coco", "make_tiny_cityscapes", "COCO_SUBSET", "CITYSCAPES_SUBSET_LABEL_IDS"]

#: A few real COCO categories (id, name) the tiny detection set uses.
COCO_SUBSET: tuple[tuple[int, str], ...] = ((1, "person"), (2, "bicycle"), (3, "car"))
#: Cityscapes label ids painted into the tiny set: road, building, vegetation, sky, car, and 0 (unlabeled).
CITYSCAPES_SUBSET_LABEL_IDS: tuple[int, ...] = (7, 11, 21, 23, 26)


def _noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)


def _save_image(pixels: np.ndarray, path: Path, **options) -> None:
    """Write an image by write-then-rename (the temporary name keeps the suffix PIL reads the format from)."""
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, **options)


def _random_box(rng: np.random.Generator, height: int, width: int) -> tuple[int, int, int, int]:
    w = int(rng.integers(width // 4, width // 2 + 1))
    h = int(rng.integers(height // 4, height // 2 + 1))
    x = int(rng.integers(0, width - w + 1))
    y = int(rng.integers(0, height - h + 1))
    return x, y, w, h


def make_tiny_coco(
    root: str | os.PathLike,
    splits: dict[str, int] | None = None,
    size: tuple[int, int] = (64, 64),
    boxes_per_image: int = 2,
    seed: int = 0,
    category_names: Sequence[str] | None = None,
) -> Path:
    """Write ``root/{split}2017/*.jpg`` and ``root/annotations/instances_{split}2017.json``.

    ``splits`` maps split name to image count (default ``{'train': 4, 'val': 2}``);
    ``size`` is (height, width).  ``category_names`` lists every category of the
    file (ids 1..N), e.g. all 80 COCO classes so that a detector's label space
    matches; boxes use the first three.  Default: :data:`COCO_SUBSET`.
    Returns ``root``.
    """
    root = Path(root)
    splits = splits or {"train": 4, "val": 2}
    categories = (
        list(COCO_SUBSET) if category_names is None else [(i + 1, n) for i, n in enumerate(category_names)]
    )
    annotated = categories[:3]
    height, width = size
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    ann_id = 1
    image_id = 1
    for split, count in splits.items():
        folder = root / f"{split}2017"
        folder.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for _ in range(count):
            pixels = _noise(rng, height, width)
            name = f"{image_id:012d}.jpg"
            for _ in range(boxes_per_image):
                x, y, w, h = _random_box(rng, height, width)
                cat_index = int(rng.integers(len(annotated)))
                pixels[y : y + h, x : x + w] = 80 + 60 * cat_index
                annotations.append(
                    dict(
                        id=ann_id, image_id=image_id, category_id=annotated[cat_index][0],
                        bbox=[x, y, w, h], area=float(w * h), iscrowd=0,
                        segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]],
                    )
                )
                ann_id += 1
            _save_image(pixels, folder / name, quality=95)
            images.append(dict(id=image_id, file_name=name, height=height, width=width))
            image_id += 1
        doc = dict(
            info=dict(description="cdarts-deploy tiny COCO-format set"),
            licenses=[],
            images=images,
            annotations=annotations,
            categories=[dict(id=i, name=n, supercategory="thing") for i, n in categories],
        )
        write_text(root / "annotations" / f"instances_{split}2017.json", json.dumps(doc))
    return root


def make_tiny_cityscapes(
    root: str | os.PathLike,
    splits: dict[str, int] | None = None,
    size: tuple[int, int] = (64, 128),
    city: str = "tinytown",
    seed: int = 0,
) -> Path:
    """Write ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` and ``gtFine/.../*_gtFine_labelIds.png``.

    Only the raw label ids are written, as in the official download; run
    ``tools/prepare_cityscapes.py`` to add the ``_gtFine_labelTrainIds.png``
    maps that training reads.  ``size`` is (height, width).  Returns ``root``.
    """
    root = Path(root)
    splits = splits or {"train": 2, "val": 2}
    height, width = size
    rng = np.random.default_rng(seed)
    for split, count in splits.items():
        img_dir = root / "leftImg8bit" / split / city
        gt_dir = root / "gtFine" / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        for frame in range(count):
            stem = f"{city}_{frame:06d}_000019"
            pixels = _noise(rng, height, width)
            labels = np.zeros((height, width), dtype=np.uint8)
            # Sky on top, road at the bottom, then a few objects: a street-like layout.
            labels[: height // 3] = 23
            labels[2 * height // 3 :] = 7
            for label_id in CITYSCAPES_SUBSET_LABEL_IDS[1:]:
                x, y, w, h = _random_box(rng, height, width)
                labels[y : y + h, x : x + w] = label_id
            for k, label_id in enumerate(CITYSCAPES_SUBSET_LABEL_IDS):
                pixels[labels == label_id] = (40 * k + 50, 200 - 30 * k, 25 * k)
            _save_image(pixels, img_dir / f"{stem}_leftImg8bit.png")
            _save_image(labels, gt_dir / f"{stem}_gtFine_labelIds.png")
    return root
