"""``cdarts-latency-table``: measure the latency of every part of the chain search space on one runtime into
``latency_table.json`` in the ``--out`` folder.

    cdarts-latency-table --space chain --runtime onnxruntime-cpu --input-size 224 --batch-size 1 --threads 2 \\
        --out tables/
    cdarts-latency-table --space chain --runtime onnxruntime-cpu --validate 10 --out tables/
    cdarts-search --space chain --latency-table tables/latency_table.json --latency-budget 12ms ...

Every (block position, candidate) of the base, plus the stem, fixed blocks and head, is timed in
isolation at the input shape it has in the network (median of ``--iters`` runs after ``--warmup``, the
runs split into ``--rounds`` rounds that visit every part in turn; ``--clock cpu`` with ``--threads 1`` times the
CPU time of ONNX Runtime's one thread instead of elapsed time, for a machine that other processes share).
``--validate N`` also measures N random children end to end (spread from the cheapest to the dearest
corner of the space, so that the fit sees its whole range), reports how well the sum of the table
predicts them (Spearman rank correlation, mean/max relative error) and stores a linear correction
(``scale * sum``; ``--correction offset|affine`` for ``sum + offset`` or both) fitted on them, with the errors
before and after, in the table.

Exit status: 0 written, 2 usage or input error (including a runtime this machine cannot run), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from cdarts_deploy.commands.args import (
    OneLineParser,
    UsageError,
    add_deprecated_option,
    add_exporter_option,
    add_out_dir_option,
    add_progress_option,
    add_threads_option,
    deprecation_line,
    non_negative_int,
    positive_int,
    prepare_out_dir,
    run_main,
    square_size,
)
from cdarts_deploy.deploy.latency_measure import (
    CLOCKS,
    PartTimer,
    check_clock,
    correction_from,
    measure_chain_table,
    random_children,
    require_runtime,
    validate_table,
)
from cdarts_deploy.genotype import base_from_option
from cdarts_deploy.latency_stats import CORRECTIONS
from cdarts_deploy.latency_table_format import RUNTIMES, save

PROG = "cdarts-latency-table"
#: The table's name inside ``--out``.
TABLE_FILE = "latency_table.json"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--space", choices=("chain",), default="chain", help="search space (default chain)")
    p.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime-cpu",
                   help="deployment runtime to measure on (default onnxruntime-cpu; the others need an NVIDIA GPU)")
    p.add_argument("--input-size", type=square_size, default=224, help="N or NxN, a square input (default 224)")
    p.add_argument("--batch-size", type=positive_int, default=1, metavar="N", help="images per run (default 1)")
    add_deprecated_option(p, "--batch", "--batch-size", dest="batch_size", type=positive_int)
    p.add_argument("--base", default="cdarts_b_base",
                   help="base architecture: cdarts_a_base, cdarts_b_base, tiny or a JSON file of arch-string stages "
                        "(default cdarts_b_base, as cdarts-search)")
    p.add_argument("--stem-channels", type=positive_int, default=16, help="stem width (default 16, as cdarts-search)")
    p.add_argument("--head-channels", type=positive_int, default=1280, help="head width (default 1280)")
    p.add_argument("--num-classes", type=positive_int, default=1000, help="classifier outputs (default 1000)")
    add_threads_option(p)
    p.add_argument("--warmup", type=non_negative_int, default=10, help="untimed runs per part (default 10)")
    p.add_argument("--iters", type=positive_int, default=50,
                   help="timed runs per part; the median is kept (default 50)")
    p.add_argument("--rounds", type=positive_int, default=5,
                   help="interleaved rounds the runs of every part are split into, so that load from other "
                        "processes falls on all parts alike (default 5)")
    p.add_argument("--clock", choices=CLOCKS, default="wall",
                   help="wall: elapsed time (default); cpu: CPU time of the timing thread, for onnxruntime-cpu with "
                        "--threads 1 on a machine other processes share (time they take the core is not counted)")
    p.add_argument("--validate", type=non_negative_int, default=0,
                   help="measure this many random children end to end and store a fitted correction (default 0)")
    p.add_argument("--correction", choices=CORRECTIONS, default="scale",
                   help="correction fitted by --validate: scale (measured/sum ratio, default), offset (a constant "
                        "added) or affine (both, least squares)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random children of --validate (default 0)")
    add_exporter_option(p)
    add_progress_option(p)
    add_out_dir_option(p, required=True)
    return p


def _check_out(path: str) -> Path:
    """The table file: ``TABLE_FILE`` in the folder ``--out``, or, the older spelling, ``--out`` itself when it
    names a .json file."""
    out = Path(path)
    if out.suffix.lower() != ".json" or out.is_dir():
        return prepare_out_dir(out) / TABLE_FILE
    print(deprecation_line(PROG, "--out FILE", "--out DIR"), file=sys.stderr)
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist; create it or pass another path")
    return out


def run(args: argparse.Namespace) -> int:

    if args.input_size < 32:
        raise UsageError(f"--input-size {args.input_size}: must be at least 32 (the chain networks reduce by 32)")
    require_runtime(args.runtime)  # before any work: a machine without the runtime says so in one line
    check_clock(args.clock, args.runtime, args.threads)
    base = base_from_option(args.base)
    out = _check_out(args.out)  # after the other checks: bad input creates no folder
    network = {"num_classes": args.num_classes, "stem_channels": args.stem_channels,
               "head_channels": args.head_channels}
    with PartTimer(args.runtime, threads=args.threads, warmup=args.warmup, iters=args.iters,
                   exporter=args.exporter, rounds=args.rounds, clock=args.clock) as timer:
        table = measure_chain_table(base, network, args.input_size, args.batch_size, timer, progress=args.progress)
        print(f"{len(table.blocks)} searchable blocks x {len(table.blocks[0].ms)} candidates + "
              f"{len(table.fixed)} fixed parts on {args.runtime}; fixed parts {table.fixed_ms():.3f} ms")
        if args.validate:
            children = random_children(table, args.validate, args.seed, spread=True)
            bar = tqdm(total=len(children), desc="end-to-end children", unit="child", disable=not args.progress)
            validation = validate_table(table, timer, children, progress=bar.update)
            bar.close()
            table.correction = correction_from(validation, args.correction)
            c = table.correction
            rho = "n/a" if c["spearman"] is None else f"{c['spearman']:.3f}"
            print(f"{len(children)} random children: Spearman {rho}; table sum mean/max relative error "
                  f"{c['before']['mean_rel_error']:.1%}/{c['before']['max_rel_error']:.1%}, after the correction "
                  f"({c['scale']:.4f} x sum {c['offset_ms']:+.4f} ms) {c['after']['mean_rel_error']:.1%}/"
                  f"{c['after']['max_rel_error']:.1%}")
    load = table.conditions.get("load", {}).get("loadavg")
    save(table, out)
    print(f"latency table: {out} (load average {load})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
