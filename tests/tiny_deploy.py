"""Shared test material for the deployment tests: the tiny network's settings and calibration pictures.

The session-scoped fixtures built from these (``calibration_dir``, ``tiny_network``) live in conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

HW = (32, 32)
GENOTYPE = "cdarts_cifar"
NET = dict(layout="cifar", width=8, cells=5, num_classes=10)


def write_calibration_images(folder: Path, count: int = 40, seed: int = 0) -> Path:
    """Structured pictures (stripes, blobs, gradients) of varying colours and sizes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        h, w = rng.integers(36, 60, size=2)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        f1, f2, phase = rng.uniform(0.05, 0.6), rng.uniform(0.05, 0.6), rng.uniform(0, 6.3)
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 20)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        chans = [np.sin(f1 * xx + phase), np.cos(f2 * yy), blob * 2 - 1]
        colour = rng.uniform(0.3, 1.0, size=3)
        img = np.stack([chans[(i + k) % 3] * colour[k] for k in range(3)], -1) * 0.5 + 0.5
        Image.fromarray((img * 255).clip(0, 255).astype(np.uint8)).save(folder / f"calib_{i:03d}.png")
    return folder


def write_tiny_genotype(folder: Path) -> Path:
    """The zoo's cdarts_cifar cells as a small 10-class CIFAR network (C=8, 5 cells), written as ``tinynet.json``."""
    genotype = folder / "tinynet.json"
    doc = json.loads((Path(__file__).parents[1] / "cdarts_deploy" / "zoo" / "cdarts_cifar.json").read_text())
    doc.update(name="tinynet", network={"layout": "cifar", "width": 8, "cells": 5, "num_classes": 10,
                                         "input_size": 32})
    genotype.write_text(json.dumps(doc))
    return genotype
