"""``cdarts-train``: retrain a genotype (file or zoo name) into a classifier with the paper's recipes.

Every field of :class:`cdarts_deploy.training.presets.TrainConfig` is a flag; ``--preset`` fills the ones not
given (default: ``paper-chain`` for chain genotypes, else ``paper-cifar`` on CIFAR-sized images and
``paper-imagenet`` otherwise).  ``--out`` receives ``run.json`` (how to rebuild the network), ``genotype.json``,
``log.jsonl``, ``accuracy.png``, ``last.pth`` / ``best.pth`` (plain state_dicts of the deployed network) and
``resume.pth``.  Under torchrun it trains data-parallel (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import typing
from pathlib import Path
from typing import Any, Sequence

import torch

from cdarts_deploy import genotype as gt
from cdarts_deploy.atomic_files import write_text
from cdarts_deploy.commands import bounds
from cdarts_deploy.commands.args import (
    OneLineParser,
    UsageError,
    add_bad_images_option,
    add_device_option,
    add_out_dir_option,
    add_overwrite_option,
    add_progress_option,
    add_threads_option,
    non_negative_int,
    positive_int,
    prepare_out_dir,
    run_main,
    square_size,
)
from cdarts_deploy.commands.bounds import check_bounds
from cdarts_deploy.commands.outputs import refuse_earlier_results, refuse_input_collision
from cdarts_deploy.data.distributed import init_distributed, shutdown
from cdarts_deploy.training import presets
from cdarts_deploy.training.data import DATASETS, read_datasets
from cdarts_deploy.training.run import RunOptions, fit

RUN_FORMAT = "cdarts-train-run/1"
# what a run writes into --out (resume.pth aside): a folder holding any of them holds an earlier run
RUN_FILES = ("run.json", "genotype.json", "log.jsonl", "accuracy.png", "loss.png", "last.pth", "best.pth")


def _flag_type(f: dataclasses.Field) -> Any:
    hint = typing.get_type_hints(presets.TrainConfig)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    base = args[0]
    if f.name == "input_size":  # N or NxN, as every command's --input-size
        return square_size
    if base is int:
        return non_negative_int
    return base


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="cdarts-train",
                      description="Retrain a genotype into a classifier (paper Sec. 4.3, 4.4, 4.6).")
    p.add_argument("genotype", help="genotype JSON file or zoo name, e.g. cdarts_cifar")
    p.add_argument("--data-root", required=True,
                   help="CIFAR python batch folder, or an ImageFolder with train/ and val/")
    add_out_dir_option(p, required=True)
    p.add_argument("--preset", choices=tuple(presets.PRESETS), help="recipe whose values fill the flags not given")
    p.add_argument("--dataset", choices=DATASETS, default="auto", help="default: detected from --data-root")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its resume.pth")
    add_overwrite_option(p)
    add_bad_images_option(p)
    add_device_option(p)
    p.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default="auto",
                   help="mixed precision (auto: bf16 on a GPU that supports it, else fp16 on GPU, off on CPU)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    add_threads_option(p)
    p.add_argument("--eval-batch-size", type=positive_int, metavar="N",
                   help="images per step of the validation loader (default: --batch-size)")
    p.add_argument("--stop-after", type=positive_int, help="stop after this many finished epochs (resume later)")
    add_progress_option(p)
    g = p.add_argument_group("recipe (defaults from --preset)")
    for f in dataclasses.fields(presets.TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f.metadata["help"])
        else:
            g.add_argument(flag, type=_flag_type(f), default=None, choices=f.metadata.get("choices"),
                           help=f.metadata["help"])
    return p


def _amp_dtype(choice: str, device: torch.device) -> torch.dtype | None:
    if choice == "off" or (choice == "auto" and device.type != "cuda"):
        return None
    if choice == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if choice == "bf16" else torch.float16


def _default_preset(genotype: gt.Genotype, natural_layout: str, layout: str | None) -> str:
    if isinstance(genotype, gt.ChainGenotype):
        return "paper-chain"
    return "paper-cifar" if (layout or natural_layout) == "cifar" else "paper-imagenet"


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.resume and (out / "resume.pth").is_file():
        raise UsageError(f"--out {out} already holds a run (resume.pth); pass --resume to continue it or another --out")
    if args.resume and not (out / "resume.pth").is_file():
        raise UsageError(f"--resume: {out}/resume.pth not found; start the run without --resume")
    if args.resume and args.overwrite:
        raise UsageError("--resume continues the run in --out, --overwrite replaces it; pass one of them")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; pass a folder")
    refuse_input_collision([out / name for name in RUN_FILES], [args.genotype], "--out")
    if not args.resume:  # a finished run has no resume.pth but its weights and log are still its results
        refuse_earlier_results(out, RUN_FILES, args.overwrite)
    genotype = gt.load(args.genotype)
    data = read_datasets(args.data_root, args.dataset, bad_images=args.bad_images)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(presets.TrainConfig)}
    preset = args.preset or _default_preset(genotype, data.natural_layout, given["layout"])
    cfg = presets.preset_config(preset, **given)
    check_bounds(dataclasses.asdict(cfg), {**bounds.TRAIN, "input_size": (0, bounds.INPUT_SIDE[1])})
    ctx = init_distributed(args.device)
    amp = _amp_dtype(args.amp, ctx.device)

    def on_start(net_args: dict[str, Any]) -> None:
        prepare_out_dir(out)
        gt.save(genotype, out / "genotype.json")
        doc = dict(format=RUN_FORMAT, preset=preset, genotype="genotype.json", network=net_args,
                   config=dataclasses.asdict(cfg), world_size=ctx.world_size,
                   data=dict(dataset=data.dataset, classes=data.classes))
        write_text(out / "run.json", json.dumps(doc, indent=2, sort_keys=True) + "\n")

    opts = RunOptions(out=out, ctx=ctx, amp_dtype=amp, channels_last=args.channels_last, resume=args.resume,
                      stop_after=args.stop_after, progress=args.progress,
                      eval_batch_size=args.eval_batch_size, on_start=on_start)
    start = time.perf_counter()
    try:
        result = fit(genotype, cfg, data, opts)
    finally:
        shutdown()
    if ctx.is_main:
        last = result.records[-1] if result.records else {}
        print(f"cdarts-train: {len(result.records)}/{cfg.epochs} epochs, top-1 {last.get('top1', float('nan')):.2f}% "
              f"(best {result.best_top1:.2f}% at epoch {result.best_epoch}), {time.perf_counter() - start:.0f} s; "
              f"weights {out / 'best.pth'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("cdarts-train", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
