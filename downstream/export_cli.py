"""``cdarts-export-mm``: export a detector or segmentor from an mmdet/mmseg config to verified ONNX.

    cdarts-export-mm downstream/configs/retinanet_cdarts-b_fpn_1x_coco.py \
        --checkpoint work_dirs/retinanet/epoch_12.pth --input-size 800x1344 --out out/

Detectors export backbone + neck + head without post-processing or NMS (raw class scores and box
deltas per level); segmentors export backbone + decoder with the logits resized to the input.
Writes ``<name>.onnx`` and ``<name>.json`` (outputs, shapes, parity against PyTorch in ONNX Runtime
under the same rule as cdarts-export, versions); nothing is written unless parity holds.
Exit status: 0 success, 1 parity failed, 2 usage or input error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from cdarts_deploy.commands.args import OneLineParser, parse_size, positive_int, prepare_out_dir, run_main

PROG = "cdarts-export-mm"


def build_parser() -> argparse.ArgumentParser:
    from mmengine.config import DictAction

    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="mmdet/mmseg config, e.g. downstream/configs/retinanet_cdarts-b_fpn_1x_coco.py")
    p.add_argument("--checkpoint", help="checkpoint from tools/train.py (default: the config's initial weights)")
    p.add_argument("--input-size", type=parse_size, default=(512, 512), help="HxW of the exported input (default 512x512)")
    p.add_argument("--out", default=".", help="output folder (created if missing)")
    p.add_argument("--name", help="output file stem (default: the config's name)")
    p.add_argument("--opset", type=positive_int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config entries: key=value")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv)


def _log(message: str) -> None:
    print(f"[{PROG}] {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from cdarts_deploy.deploy.model_spec import random_batch
    from cdarts_deploy.deploy.pipeline import OnnxExport, export_verified
    from downstream.export_graphs import DetectorGraph, build_from_config, graph_for

    out_dir = prepare_out_dir(args.out)
    name = args.name or Path(args.config).stem
    model = build_from_config(args.config, args.cfg_options, args.checkpoint)
    graph = graph_for(model)
    height, width = args.input_size
    _log(f"exporting {type(model).__name__} of {args.config} at {height}x{width}")
    export = OnnxExport((1, 3, height, width), args.opset, dynamic_batch=False, exporter="dynamo",
                        output_names=graph.output_names)
    report = {
        "config": str(args.config),
        "checkpoint": args.checkpoint,
        "model": type(model).__name__,
        "input": {"name": "input", "shape": [1, 3, height, width]},
        "post_processing": "none (raw per-level outputs; decode and NMS downstream)"
        if isinstance(graph, DetectorGraph) else "logits resized to the input; argmax downstream",
    }
    result = export_verified(graph, out_dir, name, export, {"random b1": random_batch(1, (height, width), seed=0)},
                             report, parity_key="outputs", log=_log)
    if not result.passed:
        print(f"{PROG}: error: {result.failures[0]}; no files written", file=sys.stderr)
        return 1
    rows = result.report["outputs"]
    _log(f"wrote {out_dir / (name + '.onnx')} ({len(rows)} outputs, max abs diff vs PyTorch "
         f"{max(r['max_abs'] for r in rows):.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
