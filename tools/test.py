#!/usr/bin/env python
"""Evaluate a trained detector or segmentor (mmdet's CocoMetric, mmseg's IoUMetric, ...).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options key=value ...]
        [--out-metrics metrics.json] [--launcher pytorch]

The checkpoint is read with ``weights_only=True`` (plus numpy values): our own
checkpoints are plain data; files holding other pickled objects are refused.
Bad input (config, checkpoint, options) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from cdarts_deploy.atomic_files import write_text  # noqa: E402
from cdarts_deploy.commands.args import OneLineParser, UsageError, run_main  # noqa: E402

PROG = "test.py"


def build_parser() -> argparse.ArgumentParser:
    from downstream.runner_setup import add_runner_options

    parser = add_runner_options(OneLineParser(prog=PROG, description="Evaluate a CDARTS detector/segmentor"),
                                work_dir_help="folder for the evaluation logs")
    parser.add_argument("checkpoint", help="checkpoint written by tools/train.py (or any mmengine checkpoint)")
    parser.add_argument("--out-metrics", metavar="FILE", help="also write the metrics as JSON to FILE")
    return parser


def run(args: argparse.Namespace) -> int:
    from downstream.runner_setup import apply_launcher_env, build_runner, load_config, loading_checkpoints_safely

    apply_launcher_env(args)
    if not os.path.isfile(args.checkpoint):
        raise UsageError(f"checkpoint {args.checkpoint} not found; pass the .pth file tools/train.py wrote")
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    runner = build_runner(cfg)
    with loading_checkpoints_safely(args.checkpoint):
        metrics = runner.test()
    plain = {k: (float(v) if isinstance(v, (int, float)) or hasattr(v, "item") else v) for k, v in metrics.items()}
    print(json.dumps(plain, indent=2, default=str))
    if args.out_metrics:
        write_text(args.out_metrics, json.dumps(plain, indent=2, default=str) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv, interrupted="interrupted; no metrics written")


if __name__ == "__main__":
    sys.exit(main())
