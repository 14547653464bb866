#!/usr/bin/env python
"""Multiply-adds and parameters of a whole detector or segmentor, per part.

    python tools/get_flops.py CONFIG [--shape 800 1333] [--cfg-options key=value ...] [--json out.json]

Counts the exported graph (detector: backbone + neck + head without NMS;
segmentor: backbone + decoder, auxiliary heads excluded) with mmengine's
fvcore-style analyzer, which counts one multiply-add as one "flop".
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from cdarts_deploy.atomic_files import write_text  # noqa: E402
from cdarts_deploy.commands.args import OneLineParser, UsageError, run_main  # noqa: E402
from downstream.export_graphs import build_from_config, graph_for

PROG = "get_flops.py"


def build_parser() -> argparse.ArgumentParser:
    from downstream.runner_setup import CfgOptionsAction

    parser = OneLineParser(prog=PROG, description="Multiply-adds of a CDARTS detector/segmentor")
    parser.add_argument("config", help="config file path")
    parser.add_argument("--shape", type=int, nargs="+", default=[800, 1333], help="input H W (or one side)")
    parser.add_argument("--cfg-options", nargs="+", action=CfgOptionsAction, help="override config entries: key=value")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    if len(args.shape) not in (1, 2) or min(args.shape) < 32:
        raise UsageError("--shape takes H W (or one side), each at least 32")
    height, width = (args.shape * 2)[:2]

    from mmengine.analysis import FlopAnalyzer, parameter_count


    graph = graph_for(build_from_config(args.config, args.cfg_options))
    inputs = (torch.zeros(1, 3, height, width),)
    with torch.no_grad():
        analyzer = FlopAnalyzer(graph, inputs)
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = analyzer.total()
        by_module = analyzer.by_module()
    params = parameter_count(graph)
    inner = "detector" if hasattr(graph, "detector") else "segmentor"
    parts = [p for p in ("backbone", "neck", "bbox_head", "decode_head") if f"{inner}.{p}" in by_module]
    result = {
        "config": args.config,
        "input_shape": [1, 3, height, width],
        "multiply_adds": int(total),
        "params": int(params[""]),
        "parts": {p: {"multiply_adds": int(by_module[f"{inner}.{p}"]), "params": int(params.get(f"{inner}.{p}", 0))}
                  for p in parts},
    }
    print(f"input shape: {height}x{width}")
    for part, numbers in result["parts"].items():
        print(f"  {part:12s} {numbers['multiply_adds'] / 1e9:8.3f} GMACs  {numbers['params'] / 1e6:7.3f} M params")
    print(f"  {'total':12s} {total / 1e9:8.3f} GMACs  {params[''] / 1e6:7.3f} M params")
    if args.json:
        write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
