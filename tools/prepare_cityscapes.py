#!/usr/bin/env python
"""Add the ``*_gtFine_labelTrainIds.png`` maps that mmseg's CityscapesDataset reads.

    python tools/prepare_cityscapes.py data/cityscapes [--overwrite]

Expects the official layout (``leftImg8bit/{train,val,test}/<city>/`` and
``gtFine/{train,val,test}/<city>/*_gtFine_labelIds.png``) and maps the 34
Cityscapes label ids to the 19 training ids (others to 255, ignored).
Each map is written to a temporary file and renamed, so an interrupted run
leaves no half-written labels.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

IGNORE = 255
#: Cityscapes label id -> train id (the 19 evaluated classes; everything else is ignored).
LABEL_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
LABEL_SUFFIX = "_gtFine_labelIds.png"
TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"


def lookup_table() -> np.ndarray:
    table = np.full(256, IGNORE, dtype=np.uint8)
    for label_id, train_id in LABEL_TO_TRAIN_ID.items():
        table[label_id] = train_id
    return table


def convert_one(src: Path, table: np.ndarray) -> Path:
    """Write the train-id map beside ``src`` atomically; returns its path."""
    labels = np.asarray(Image.open(src))
    if labels.ndim != 2:
        raise ValueError(f"{src} is not a single-channel label image")
    dst = src.with_name(src.name[: -len(LABEL_SUFFIX)] + TRAIN_ID_SUFFIX)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".png", dir=src.parent)
    os.close(fd)
    try:
        Image.fromarray(table[labels]).save(tmp, format="PNG")
        os.replace(tmp, dst)
    except BaseException:
        os.unlink(tmp)
        raise
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("root", help="Cityscapes root holding leftImg8bit/ and gtFine/")
    parser.add_argument("--overwrite", action="store_true", help="rewrite maps that already exist")
    args = parser.parse_args(argv)
    gt_root = Path(args.root) / "gtFine"
    if not gt_root.is_dir():
        print(f"prepare_cityscapes: {gt_root} not found; pass the folder that holds gtFine/ and leftImg8bit/", file=sys.stderr)
        return 2
    sources = sorted(gt_root.rglob(f"*{LABEL_SUFFIX}"))
    if not sources:
        print(f"prepare_cityscapes: no *{LABEL_SUFFIX} under {gt_root}; unpack gtFine_trainvaltest.zip there", file=sys.stderr)
        return 2
    table = lookup_table()
    written = 0
    for src in tqdm(sources, desc="labelTrainIds", unit="map"):
        dst = src.with_name(src.name[: -len(LABEL_SUFFIX)] + TRAIN_ID_SUFFIX)
        if dst.exists() and not args.overwrite:
            continue
        convert_one(src, table)
        written += 1
    print(f"prepare_cityscapes: wrote {written} of {len(sources)} train-id maps under {gt_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
