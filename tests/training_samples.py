"""Tiny training material shared by the retraining tests: an ImageFolder of coloured squares and a network small
enough to train for an epoch in about a second on one CPU thread."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 16
CLASSES = 3
# cdarts_cifar at C=4 with 3 cells (one normal, two reduction) on 16x16 images
TINY = ["--width", "4", "--cells", "3", "--input-size", str(SIZE)]
TINY_NET = dict(layout="cifar", width=4, cells=3, num_classes=CLASSES, input_size=SIZE)


def make_image_folder(root: Path, train_per_class: int = 8, val_per_class: int = 4, seed: int = 0) -> Path:
    """``root/train/c<k>/`` and ``root/val/c<k>/``: noise with one strong colour channel per class."""
    rng = np.random.default_rng(seed)
    for part, n in (("train", train_per_class), ("val", val_per_class)):
        for c in range(CLASSES):
            folder = root / part / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 80, (SIZE, SIZE, 3)).astype(np.uint8)
                arr[..., c] += 150
                Image.fromarray(arr).save(folder / f"{i}.png")
    return root


def brightness_image_folder(root: Path, classes: int = 3, per_class: int = 8, size: int = 40) -> Path:
    """``root/class<k>/``: noise whose brightness depends on the class, so a search has something to learn."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray((rng.random((size, size, 3)) * 80 + c * 80).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def one_line_error(capsys, code: int, prog: str) -> str:
    """The command's refusal: exit 2 and one ``<prog>: error: ...`` line on stderr (progress lines aside)."""
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if not line.startswith(f"[{prog}]")]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def train_tiny(images: Path, out: Path, *extra: str) -> int:
    """``cdarts-train`` of a tiny cdarts_cifar network for one epoch on ``images`` into ``out``."""
    from cdarts_deploy.commands import train as train_cmd

    return train_cmd.main(["cdarts_cifar", "--data-root", str(images), "--out", str(out), "--preset", "cpu-smoke",
                           *TINY, "--batch-size", "8", "--epochs", "1", "--threads", "1", "--no-progress", *extra])

