#!/usr/bin/env python
"""Evaluate a trained detector or segmentor (mmdet's CocoMetric, mmseg's IoUMetric, ...).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options key=value ...]
        [--out-metrics metrics.json] [--launcher pytorch]

The checkpoint is read with ``weights_only=True`` (plus numpy values): our own
checkpoints are plain data; files holding other pickled objects are refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description="Evaluate a CDARTS detector/segmentor")
    parser.add_argument("config", help="config file path")
    parser.add_argument("checkpoint", help="checkpoint written by tools/train.py (or any mmengine checkpoint)")
    parser.add_argument("--work-dir", help="folder for the evaluation logs")
    parser.add_argument("--out-metrics", metavar="FILE", help="also write the metrics as JSON to FILE")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config entries: key=value")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none", help="job launcher")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from cdarts_deploy.atomic_files import write_text
    from downstream.checkpoints import mmengine_safe_globals
    from downstream.runner_setup import UsageError, build_runner, describe_load_error, load_config

    try:
        if not os.path.isfile(args.checkpoint):
            raise UsageError(f"checkpoint {args.checkpoint} not found; pass the .pth file tools/train.py wrote")
        cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    except UsageError as exc:
        print(f"test.py: {exc}", file=sys.stderr)
        return 2
    cfg.load_from = args.checkpoint
    cfg.resume = False
    runner = build_runner(cfg)
    try:
        with mmengine_safe_globals():
            metrics = runner.test()
    except Exception as exc:
        message = describe_load_error(exc, args.checkpoint)
        if message is None:
            raise
        print(f"test.py: {message}", file=sys.stderr)
        return 2
    plain = {k: (float(v) if isinstance(v, (int, float)) or hasattr(v, "item") else v) for k, v in metrics.items()}
    print(json.dumps(plain, indent=2, default=str))
    if args.out_metrics:
        write_text(args.out_metrics, json.dumps(plain, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
