#!/usr/bin/env python
"""Check a COCO detection folder before training, and optionally cut a small subset.

    python tools/prepare_coco.py data/coco                       # check the layout
    python tools/prepare_coco.py data/coco --subset 500 --out data/coco-mini

The configs expect mmdet's standard layout: ``annotations/instances_train2017.json``,
``annotations/instances_val2017.json``, ``train2017/`` and ``val2017/``.  The check
reports missing folders and images referenced by the annotations but absent on disk.
``--subset N`` writes the first N images of each split (and their annotations) as a
new root with the same layout, for quick schedule or pipeline trials.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from tqdm import tqdm

from cdarts_deploy.atomic_files import write_text  # noqa: E402
from cdarts_deploy.commands.args import OneLineParser, UsageError, positive_int, run_main  # noqa: E402

PROG = "prepare_coco"
SPLITS = ("train2017", "val2017")


def check(root: Path) -> list[str]:
    """Problems with the layout under ``root`` (empty when it is ready)."""
    problems = []
    for split in SPLITS:
        ann = root / "annotations" / f"instances_{split}.json"
        if not ann.is_file():
            problems.append(f"missing {ann}")
            continue
        if not (root / split).is_dir():
            problems.append(f"missing image folder {root / split}")
            continue
        doc = json.loads(ann.read_text())
        absent = [im["file_name"] for im in doc.get("images", []) if not (root / split / im["file_name"]).is_file()]
        if absent:
            problems.append(f"{len(absent)} images of {ann.name} missing under {root / split} (e.g. {absent[0]})")
    return problems


def write_subset(root: Path, out: Path, count: int) -> None:
    """Copy the first ``count`` images per split and their annotations to ``out``."""
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        doc = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
        images = doc["images"][:count]
        keep = {im["id"] for im in images}
        doc["images"] = images
        doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in keep]
        (out / split).mkdir(exist_ok=True)
        for im in tqdm(images, desc=split, unit="img"):
            shutil.copy2(root / split / im["file_name"], out / split / im["file_name"])
        write_text(out / "annotations" / f"instances_{split}.json", json.dumps(doc))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[1])
    parser.add_argument("root", help="COCO root holding annotations/, train2017/, val2017/")
    parser.add_argument("--subset", type=positive_int, metavar="N",
                        help="also write the first N images per split to --out")
    parser.add_argument("--out", help="destination root for --subset")
    return parser


def run(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if args.subset is not None and not args.out:
        raise UsageError("--subset needs --out DIR")
    problems = check(root)
    if problems:
        raise UsageError(f"{root} is not ready: {'; '.join(problems)}; download COCO 2017 train/val images and "
                         "annotations into that layout")
    print(f"{PROG}: {root} has the layout the configs expect")
    if args.subset is not None:
        write_subset(root, Path(args.out), args.subset)
        print(f"{PROG}: wrote a {args.subset}-image-per-split subset to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv,
                    interrupted="interrupted; the subset may lack images, run again into a fresh --out")


if __name__ == "__main__":
    sys.exit(main())
