"""``cdarts-eval``: top-1 / top-5 of a trained checkpoint on the validation images, and with ``--onnx`` of the
exported model on the same images, with the fraction of images on which both predict the same class.

The network is rebuilt from the ``run.json`` that ``cdarts-train`` wrote beside the checkpoint (or ``--run``).
Exit status 1 when the ONNX model agrees with PyTorch on fewer than ``--min-agreement`` of the images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import torch
from timm.data import resolve_data_config

from backbones.checkpoint_io import load_into, read_state_dict
from cdarts_deploy import bounded_json
from cdarts_deploy import genotype as gt
from cdarts_deploy.atomic_files import write_text
from cdarts_deploy.commands.args import (
    OneLineParser,
    UsageError,
    add_bad_images_option,
    add_json_option,
    add_overwrite_option,
    add_progress_option,
    add_threads_option,
    library_threads,
    positive_int,
    run_main,
)
from cdarts_deploy.commands.outputs import check_json_target
from cdarts_deploy.training.data import DATASETS, eval_loader, eval_transform, read_datasets
from cdarts_deploy.training.evaluate import MIN_AGREEMENT, agreement, check_agreement, evaluate_onnx
from cdarts_deploy.training.loop import StepSettings, evaluate
from cdarts_deploy.training.model import build_model


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="cdarts-eval", description="Accuracy of a cdarts-train checkpoint (and of its ONNX export).")
    p.add_argument("checkpoint", help="best.pth or last.pth of a cdarts-train run (loaded with weights_only=True)")
    p.add_argument("--data-root", required=True, help="the data the run used (CIFAR batches or ImageFolder with val/)")
    p.add_argument("--dataset", choices=DATASETS, default="auto")
    p.add_argument("--run", help="the run's run.json (default: the one beside the checkpoint)")
    p.add_argument("--onnx", help="exported ONNX file of the same network to evaluate on the same images")
    p.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT,
                   help=f"least fraction of identical predictions for the ONNX model (default {MIN_AGREEMENT})")
    p.add_argument("--batch-size", type=positive_int, default=64, metavar="N",
                   help="images per step of the validation loader (default 64)")
    add_threads_option(p)
    add_json_option(p)
    add_overwrite_option(p)
    add_bad_images_option(p)
    add_progress_option(p)
    return p


def _read_run(path: Path) -> dict:
    if not path.is_file():
        raise UsageError(f"{path} not found; pass --run with the run.json that cdarts-train wrote for this checkpoint")
    try:
        doc = bounded_json.load(path, expected="a cdarts-train run.json")
        if doc.get("format") != "cdarts-train-run/1":
            raise ValueError("format")
        return doc
    except (ValueError, AttributeError):  # JSONInputError is a ValueError too
        raise UsageError(f"{path} is not a cdarts-train run.json") from None


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if not 0.0 <= args.min_agreement <= 1.0:
        raise UsageError(f"--min-agreement {args.min_agreement} must be a fraction between 0 and 1")
    ckpt = Path(args.checkpoint)
    run_path = Path(args.run) if args.run else ckpt.parent / "run.json"
    doc = _read_run(run_path)
    genotype_path = run_path.parent / str(doc["genotype"])
    if args.json:  # checked before the slow part, and never one of the files this command reads
        check_json_target(args.json, [ckpt, run_path, genotype_path, args.onnx], args.overwrite)
    genotype = gt.load(genotype_path)
    model = build_model(genotype, doc["network"])
    load_into(model, read_state_dict(ckpt), ckpt, hint="pass the checkpoint of the run that wrote this run.json")
    model.eval()
    data = read_datasets(args.data_root, args.dataset, bad_images=args.bad_images, need_train=False)
    if data.num_classes != doc["network"]["num_classes"]:
        raise UsageError(f"{args.data_root} has {data.num_classes} classes, "
                         f"the network {doc['network']['num_classes']}; pass the data the run was trained on")
    data.val.transform = eval_transform(resolve_data_config({}, model=model), doc["config"].get("crop_pct"))
    loader = eval_loader(data.val, args.batch_size)
    progress = args.progress
    result = evaluate(model, loader, StepSettings(torch.device("cpu"), progress=progress), keep_predictions=True)
    report = dict(checkpoint=str(ckpt), images=result["images"], top1=result["top1"], top5=result["top5"])
    line = f"PyTorch: top-1 {result['top1']:.2f}%, top-5 {result['top5']:.2f}% on {result['images']} images"
    same = None
    if args.onnx:
        score = evaluate_onnx(args.onnx, loader, threads=library_threads(args.threads), num_classes=data.num_classes,
                              progress=progress)
        same = agreement(result["predictions"], score.predictions)
        report["onnx"] = dict(file=str(args.onnx), top1=score.top1, top5=score.top5, agreement=same)
        line += f"; ONNX: top-1 {score.top1:.2f}%, top-5 {score.top5:.2f}%, same prediction on {100 * same:.2f}%"
    if args.json:
        write_text(args.json, json.dumps(report, indent=2) + "\n")
    print(line)
    if same is not None:
        check_agreement(same, args.min_agreement, what=str(args.onnx))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("cdarts-eval", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
