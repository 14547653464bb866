#!/usr/bin/env python
"""Train a detector or segmentor from an mmdet/mmseg config on mmengine's Runner.

    python tools/train.py downstream/configs/retinanet_cdarts-b_fpn_1x_coco.py \
        [--work-dir DIR] [--cfg-options key=value ...] [--resume [CHECKPOINT]] [--amp] [--auto-scale-lr]
        [--launcher none|pytorch|slurm|mpi]

Multi-GPU: ``bash tools/dist_train.sh CONFIG GPUS [options]`` runs
``torchrun --nproc_per_node GPUS tools/train.py CONFIG --launcher pytorch [options]``.
``--auto-scale-lr`` scales the config's lr linearly from ``auto_scale_lr.base_batch_size``
(16 for the detection configs: 8 GPUs x 2 images) to GPUs x ``train_dataloader.batch_size``.
Checkpoints are written in a form ``torch.load(weights_only=True)`` accepts.
Bad input (config, checkpoint, options) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from cdarts_deploy.commands.args import OneLineParser, UsageError, run_main  # noqa: E402

PROG = "train.py"


def build_parser() -> argparse.ArgumentParser:
    from downstream.runner_setup import add_runner_options

    parser = add_runner_options(OneLineParser(prog=PROG, description="Train a CDARTS detector/segmentor"),
                                work_dir_help="folder for logs and checkpoints (default work_dirs/<config name>)")
    parser.add_argument("--resume", nargs="?", const="auto", metavar="CHECKPOINT",
                        help="resume from CHECKPOINT, or from the latest checkpoint in the work dir when given alone")
    parser.add_argument("--amp", action="store_true", help="mixed precision training")
    parser.add_argument("--auto-scale-lr", action="store_true",
                        help="scale the lr linearly from auto_scale_lr.base_batch_size to the real total batch size")
    return parser


def run(args: argparse.Namespace) -> int:
    from downstream.runner_setup import (
        apply_launcher_env,
        build_runner,
        enable_auto_scale_lr,
        load_config,
        loading_checkpoints_safely,
    )

    apply_launcher_env(args)
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        if not os.path.isfile(args.resume):
            raise UsageError(
                f"checkpoint {args.resume} not found; pass an existing file to --resume or none for the latest")
        cfg.resume, cfg.load_from = True, args.resume
    if args.amp:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.loss_scale = "dynamic"
    if args.auto_scale_lr:
        enable_auto_scale_lr(cfg)
    runner = build_runner(cfg)
    with loading_checkpoints_safely(cfg.get("load_from")):
        runner.train()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv,
                    interrupted="interrupted; continue from the latest checkpoint with --resume")


if __name__ == "__main__":
    sys.exit(main())
