"""Shared test material for the deployment tests: calibration pictures and one tiny exported network.

The ONNX export is the slow step (torch.export), so it happens once per test process and is shared by
test_precision.py and test_profile*.py.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
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


@functools.lru_cache(maxsize=1)
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="cdarts-deploy-tests-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.lru_cache(maxsize=1)
def calibration_dir() -> Path:
    return write_calibration_images(_workdir() / "calib")


@functools.lru_cache(maxsize=1)
def tiny_network():
    """(model, onnx_path, calibration images): a small CDARTS network whose BatchNorm statistics come from
    the calibration images (random weights, but activations of a sane scale and logits that differ per image)."""
    import torch

    from backbones.factory import create_model_from_genotype
    from cdarts_deploy import onnx_export as ox
    from cdarts_deploy import precision as pr

    torch.manual_seed(0)
    model = create_model_from_genotype(GENOTYPE, **NET)
    images = pr.load_images(calibration_dir(), HW)
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the passes
    with torch.no_grad():
        for _ in range(2):
            model(torch.from_numpy(images))
    model.eval()
    path = _workdir() / "tiny.onnx"
    ox.export_onnx(model, path, (2, 3, *HW), exporter="torchscript")  # the fast exporter; both are verified
    return model, path, images
