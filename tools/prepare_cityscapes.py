#!/usr/bin/env python
"""Add the ``*_gtFine_labelTrainIds.png`` maps that mmseg's CityscapesDataset reads.

    python tools/prepare_cityscapes.py data/cityscapes [--overwrite]

Expects the official layout (``leftImg8bit/{train,val,test}/<city>/`` and
``gtFine/{train,val,test}/<city>/*_gtFine_labelIds.png``) and maps the 34
Cityscapes label ids to the 19 training ids (others to 255, ignored).
Each map is written to a temporary file and renamed, so an interrupted run
leaves no half-written labels.  Bad input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from cdarts_deploy.atomic_files import atomic_path  # noqa: E402
from cdarts_deploy.commands.args import OneLineParser, UsageError, run_main  # noqa: E402

PROG = "prepare_cityscapes"

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


def train_id_path(src: Path) -> Path:
    """The ``*_gtFine_labelTrainIds.png`` beside a ``*_gtFine_labelIds.png``."""
    return src.with_name(src.name[: -len(LABEL_SUFFIX)] + TRAIN_ID_SUFFIX)


def convert_one(src: Path, table: np.ndarray) -> Path:
    """Write the train-id map beside ``src`` atomically; returns its path."""
    labels = np.asarray(Image.open(src))
    if labels.ndim != 2:
        raise UsageError(f"{src} is not a single-channel label image; expected the official gtFine labelIds maps")
    dst = train_id_path(src)
    with atomic_path(dst) as tmp:
        Image.fromarray(table[labels]).save(tmp, format="PNG")
    return dst


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[1])
    parser.add_argument("root", help="Cityscapes root holding leftImg8bit/ and gtFine/")
    parser.add_argument("--overwrite", action="store_true", help="rewrite maps that already exist")
    return parser


def run(args: argparse.Namespace) -> int:
    gt_root = Path(args.root) / "gtFine"
    if not gt_root.is_dir():
        raise UsageError(f"{gt_root} not found; pass the folder that holds gtFine/ and leftImg8bit/")
    sources = sorted(gt_root.rglob(f"*{LABEL_SUFFIX}"))
    if not sources:
        raise UsageError(f"no *{LABEL_SUFFIX} under {gt_root}; unpack gtFine_trainvaltest.zip there")
    table = lookup_table()
    written = 0
    for src in tqdm(sources, desc="labelTrainIds", unit="map"):
        if train_id_path(src).exists() and not args.overwrite:
            continue
        convert_one(src, table)
        written += 1
    print(f"{PROG}: wrote {written} of {len(sources)} train-id maps under {gt_root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv,
                    interrupted="interrupted; the maps written so far are whole, run again to add the rest")


if __name__ == "__main__":
    sys.exit(main())
