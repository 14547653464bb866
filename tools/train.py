#!/usr/bin/env python
"""Train a detector or segmentor from an mmdet/mmseg config on mmengine's Runner.

    python tools/train.py downstream/configs/retinanet_cdarts-b_fpn_1x_coco.py \
        [--work-dir DIR] [--cfg-options key=value ...] [--resume [CHECKPOINT]] [--launcher pytorch]

Multi-GPU: ``bash tools/dist_train.sh CONFIG GPUS [options]`` (torchrun).
Checkpoints are written in a form ``torch.load(weights_only=True)`` accepts.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description="Train a CDARTS detector/segmentor")
    parser.add_argument("config", help="config file path")
    parser.add_argument("--work-dir", help="folder for logs and checkpoints (default work_dirs/<config name>)")
    parser.add_argument(
        "--resume", nargs="?", const="auto", metavar="CHECKPOINT",
        help="resume from CHECKPOINT, or from the latest checkpoint in the work dir when given alone",
    )
    parser.add_argument("--amp", action="store_true", help="mixed precision training")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config entries: key=value")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none", help="job launcher")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from downstream.checkpoints import mmengine_safe_globals
    from downstream.runner_setup import UsageError, build_runner, describe_load_error, load_config

    try:
        cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
        if args.resume == "auto":
            cfg.resume, cfg.load_from = True, None
        elif args.resume:
            if not os.path.isfile(args.resume):
                raise UsageError(f"checkpoint {args.resume} not found; pass an existing file to --resume or none for the latest")
            cfg.resume, cfg.load_from = True, args.resume
        if args.amp:
            cfg.optim_wrapper.type = "AmpOptimWrapper"
            cfg.optim_wrapper.loss_scale = "dynamic"
    except UsageError as exc:
        print(f"train.py: {exc}", file=sys.stderr)
        return 2
    runner = build_runner(cfg)
    try:
        with mmengine_safe_globals():  # weights_only loads, numpy values allowed
            runner.train()
    except Exception as exc:
        message = describe_load_error(exc, cfg.get("load_from"))
        if message is None:
            raise
        print(f"train.py: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
