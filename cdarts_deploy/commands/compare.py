"""``cdarts-compare``: compare every layer of an ONNX file with golden PyTorch outputs.

    cdarts-export cdarts_b --onnx --debug-layers --out out/      # writes out/cdarts_b.golden.npz
    cdarts-compare out/cdarts_b.onnx out/cdarts_b.golden.npz     # later: the same file or a newer export

Runs the ONNX file in ONNX Runtime on the golden input with every layer's output exposed and
prints a per-layer error table and the first layer whose output is outside the FP32 tolerance.
Exit status: 0 every layer agrees, 1 a layer diverges, 2 usage or input error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from cdarts_deploy.atomic_files import write_text
from cdarts_deploy.commands.args import (
    OneLineParser,
    UsageError,
    add_json_option,
    add_overwrite_option,
    add_threads_option,
    library_threads,
    positive_int,
    run_main,
)
from cdarts_deploy.commands.outputs import check_json_target
from cdarts_deploy.deploy import layer_compare as lc

PROG = "cdarts-compare"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("onnx", help="ONNX file exported from the golden file's network")
    p.add_argument("golden", help="golden .npz written by cdarts-export --debug-layers")
    add_threads_option(p)
    add_json_option(p)  # the per-layer rows
    add_overwrite_option(p)
    p.add_argument("--rows", type=positive_int, default=40, help="table rows to print (default 40)")
    return p


def run(args: argparse.Namespace) -> int:
    if not Path(args.onnx).is_file():
        raise UsageError(f"{args.onnx} does not exist; pass an ONNX file")
    if args.json:
        check_json_target(args.json, [args.onnx, args.golden], args.overwrite)
    golden = lc.Golden.load(args.golden)
    report = lc.compare_layers(golden, args.onnx, library_threads(args.threads))
    print(lc.format_table(report, args.rows))
    print(lc.summary(report))
    if args.json:
        write_text(args.json, json.dumps(report.as_dict(), indent=2) + "\n")
    return 0 if report.first_divergence is None else 1


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
