#!/usr/bin/env python
"""Write scikit-learn's 1,797 handwritten digits (8x8, bundled with scikit-learn: nothing is downloaded) as an
ImageFolder tree for ``cdarts-train``:

    python tools/prepare_digits.py --out data/digits [--size 32] [--val-fraction 0.2] [--seed 0] [--per-class N]

``OUT/train/<digit>/<index>.png`` and ``OUT/val/<digit>/<index>.png``: a stratified, seeded split; each image is
scaled from 0..16 to 0..255, upsampled to ``--size`` (bilinear) and stored as 3-channel PNG, each file written
atomically.  Running it again with the same options rewrites the same files.
"""

from __future__ import annotations

import argparse
import io
import sys
from typing import Sequence

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from cdarts_deploy.commands.args import OneLineParser, UsageError, positive_int, prepare_out_dir, run_main  # noqa: E402
from cdarts_deploy.data.image_split import split, write_image_folder  # noqa: E402

PROG = "prepare_digits"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description="scikit-learn's digits as an ImageFolder with train/ and val/")
    p.add_argument("--out", required=True, help="folder to write train/ and val/ into")
    p.add_argument("--size", type=positive_int, default=32, help="image side in pixels (default 32)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of each class for val/ (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--per-class", type=positive_int, default=None,
                   help="keep only this many images of each digit before splitting (default: all, about 180)")
    return p


def png_bytes(pixels: "object", size: int) -> bytes:
    """One 8x8 digit (values 0..16) as a ``size`` x ``size`` RGB PNG."""
    gray = np.clip(np.asarray(pixels, dtype=np.float64).reshape(8, 8) * (255.0 / 16.0), 0, 255).astype(np.uint8)
    img = Image.fromarray(gray, mode="L").resize((size, size), Image.BILINEAR).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    if not 0.0 < args.val_fraction < 1.0:
        raise UsageError(f"--val-fraction {args.val_fraction} must be between 0 and 1")
    if args.size < 8:
        raise UsageError(f"--size {args.size} must be at least 8 (the digits are 8x8)")
    digits = load_digits()
    train, val = split(digits.target, args.val_fraction, args.per_class, args.seed)
    out = prepare_out_dir(args.out)  # after the split: a refusal leaves no folder behind
    write_image_folder(out, digits.target, {"train": train, "val": val},
                       lambda i: png_bytes(digits.images[i], args.size))
    print(f"{PROG}: {len(train)} train and {len(val)} val images of 10 classes, {args.size}x{args.size}, in {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
