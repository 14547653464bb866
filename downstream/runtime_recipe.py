"""A runtime's side of an end-to-end export, from the sidecar alone: numpy, OpenCV and ONNX Runtime, no mmdet.

This is the recipe of docs/downstream.md (section 5) as code; the export check runs it against mmdet's own
``predict``, so the sidecar and the graph are verified together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class ImageMeta:
    """Where one image went: original and resized (height, width) and the (w_scale, h_scale) factors."""

    original: tuple[int, int]
    resized: tuple[int, int]
    scale: tuple[float, float]


def resize(image: np.ndarray, pre: dict) -> tuple[np.ndarray, ImageMeta]:
    """The sidecar's resize rule on one H x W x 3 uint8 image."""
    import cv2

    h, w = image.shape[:2]
    rule = pre["resize"]
    long_side, short_side = max(rule["scale"]), min(rule["scale"])
    if rule["keep_ratio"]:
        s = min(long_side / max(h, w), short_side / min(h, w))
        new_w, new_h = int(w * float(s) + 0.5), int(h * float(s) + 0.5)
    else:
        new_w, new_h = rule["scale"]
    out = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR) if (new_h, new_w) != (h, w) else image
    return out, ImageMeta((h, w), (new_h, new_w), (new_w / w, new_h / h))


def preprocess(images: Sequence[np.ndarray], pre: dict) -> tuple[np.ndarray, list[ImageMeta]]:
    """Decoded BGR uint8 images -> one N x 3 x H x W float32 batch (resize, channel order, normalize, pad)."""
    resized, metas = zip(*(resize(img, pre) for img in images))
    mean = np.asarray(pre["mean"], dtype=np.float32)
    std = np.asarray(pre["std"], dtype=np.float32)
    divisor = int(pre["pad"]["size_divisor"])
    height = max(r.shape[0] for r in resized)
    width = max(r.shape[1] for r in resized)
    height, width = -(-height // divisor) * divisor, -(-width // divisor) * divisor
    batch = np.full((len(resized), 3, height, width), pre["pad"]["value"], dtype=np.float32)
    for i, img in enumerate(resized):
        pixels = img[..., ::-1] if pre["channel_order"] == "RGB" else img
        pixels = (pixels.astype(np.float32) - mean) / std
        batch[i, :, : img.shape[0], : img.shape[1]] = pixels.transpose(2, 0, 1)
    return batch, list(metas)


def to_original(dets: np.ndarray, labels: np.ndarray, meta: ImageMeta) -> dict[str, np.ndarray]:
    """One image's ``dets``/``labels`` rows (padding dropped) clipped to the resized image and scaled back."""
    keep = labels >= 0
    boxes = dets[keep, :4].astype(np.float32).copy()
    h, w = meta.resized
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w) / np.float32(meta.scale[0])
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h) / np.float32(meta.scale[1])
    return {"boxes": boxes, "scores": dets[keep, 4].astype(np.float32), "labels": labels[keep].astype(np.int64)}


def detect(session: Any, sidecar: dict, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Run an end-to-end detector session on decoded BGR images (one batch); boxes in original pixels."""
    batch, metas = preprocess(images, sidecar["preprocessing"])
    sizes = np.asarray([m.resized for m in metas], dtype=np.float32)  # height, width before padding
    dets, labels = session.run(["dets", "labels"], {sidecar["input"]["name"]: batch,
                                                    sidecar["image_size"]["name"]: sizes})
    return [to_original(d, lab, m) for d, lab, m in zip(dets, labels, metas)]
