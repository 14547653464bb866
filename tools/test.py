#!/usr/bin/env python
"""Evaluate a trained detector or segmentor (mmdet's CocoMetric, mmseg's IoUMetric, ...).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options key=value ...]
        [--json metrics.json] [--out RESULTS] [--show-dir DIR] [--tta]
        [--launcher none|pytorch|slurm|mpi]

Multi-GPU: ``bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [options]`` (torchrun).
``--out`` keeps mmdet's and mmseg's meanings: for a detector a .pkl file of the
predictions (mmdet's DumpDetResults), for a segmentor a folder of predicted
label maps (mmseg's IoUMetric output_dir).  ``--show-dir`` draws the predictions
on the test images (for detectors under the run's log folder, as mmdet does).

The checkpoint is read with ``weights_only=True`` (plus numpy values): our own
checkpoints are plain data; files holding other pickled objects are refused.
Bad input (config, checkpoint, options) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from cdarts_deploy.atomic_files import write_text  # noqa: E402
from cdarts_deploy.commands.args import (  # noqa: E402
    OneLineParser,
    UsageError,
    add_deprecated_option,
    add_json_option,
    run_main,
)

PROG = "test.py"


def build_parser() -> argparse.ArgumentParser:
    from downstream.runner_setup import add_runner_options

    parser = add_runner_options(OneLineParser(prog=PROG, description="Evaluate a CDARTS detector/segmentor"),
                                work_dir_help="folder for the evaluation logs")
    parser.add_argument("checkpoint", help="checkpoint written by tools/train.py (or any mmengine checkpoint)")
    add_json_option(parser)  # the metrics
    add_deprecated_option(parser, "--out-metrics", "--json", dest="json")
    parser.add_argument("--out", metavar="RESULTS",
                        help="detectors: .pkl file of the predictions (mmdet's format); segmentors: folder for the "
                             "predicted label maps")
    parser.add_argument("--show-dir", metavar="DIR", help="draw the predictions on the test images into DIR")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation (the config's tta_model/tta_pipeline)")
    return parser


def run(args: argparse.Namespace) -> int:
    from downstream.runner_setup import (
        apply_launcher_env,
        build_runner,
        enable_visualization,
        load_config,
        loading_checkpoints_safely,
        use_tta,
    )

    apply_launcher_env(args)
    if not os.path.isfile(args.checkpoint):
        raise UsageError(f"checkpoint {args.checkpoint} not found; pass the .pth file tools/train.py wrote")
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    detector = cfg.get("default_scope") != "mmseg"
    if args.out and detector and not args.out.endswith((".pkl", ".pickle")):
        raise UsageError(f"--out {args.out}: for a detector the predictions are a pickle file; name it *.pkl")
    if args.out and not detector:
        cfg.test_evaluator["output_dir"] = args.out
        cfg.test_evaluator["keep_results"] = True
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)
    if args.tta:
        use_tta(cfg)
    runner = build_runner(cfg)
    if args.out and detector:
        from mmdet.evaluation import DumpDetResults

        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    with loading_checkpoints_safely(args.checkpoint):
        metrics = runner.test()
    plain = {k: (float(v) if isinstance(v, (int, float)) or hasattr(v, "item") else v) for k, v in metrics.items()}
    print(json.dumps(plain, indent=2, default=str))
    if args.json:
        write_text(args.json, json.dumps(plain, indent=2, default=str) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv, interrupted="interrupted; no metrics written")


if __name__ == "__main__":
    sys.exit(main())
