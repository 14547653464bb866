"""``cdarts-nb201``: NAS-Bench-201 (NATS-Bench topology) look-ups.

    cdarts-nb201 query 11 --benchmark NATS-tss-v1_0-3ffb9-simple/
    cdarts-nb201 query '|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|'
        --benchmark DIR --json -
    cdarts-nb201 query runs/nb201/genotype.json --benchmark DIR

Prints the validation and test top-1 accuracy (percent, mean over the benchmark's seeds) of the
200-epoch schedule on CIFAR-10, CIFAR-100 and ImageNet16-120.  The benchmark is the "simple" layout
folder; only its meta file and the one record asked for are read, through an unpickler that builds
nothing but the classes those files use.  ``--json -`` writes the JSON to standard output instead of the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from cdarts_deploy import genotype as gt
from cdarts_deploy.atomic_files import write_text
from cdarts_deploy.commands.args import OneLineParser, UsageError, add_json_option, run_main
from cdarts_deploy.nats_bench import DATASETS, Benchmark, open_benchmark

PROG = "cdarts-nb201"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=OneLineParser)
    q = sub.add_parser("query", help="accuracies of one architecture", description=__doc__.split("\n\n")[2])
    q.add_argument("arch", metavar="ARCH_OR_GENOTYPE",
                   help="benchmark index, benchmark string (|op~0|+|op~0|op~1|+...|) or nb201 genotype JSON file")
    q.add_argument("--benchmark", required=True, metavar="DIR",
                   help="NATS-Bench topology folder of the simple layout (meta.pickle.pbz2 + NNNNNN.pickle.pbz2)")
    add_json_option(q)  # "-": standard output (the description says so; the help text is every command's)
    return p


def resolve_index(bench: Benchmark, text: str) -> int:
    """The benchmark index ARCH names: an index, a benchmark string or a genotype file."""
    if text.isdigit():
        return _checked_index(bench, int(text))
    arch = _genotype_arch(text)
    index = bench.index_of(arch)
    if index is None:
        raise UsageError(f"{arch[:120]} is not an architecture of the benchmark; pass one of its "
                         f"{len(bench.archs)} strings (|op~0|+|op~0|op~1|+|op~0|op~1|op~2|)")
    return index


def _checked_index(bench: Benchmark, index: int) -> int:
    if index >= len(bench.archs):
        raise UsageError(f"architecture index {index} is out of range; pass 0..{len(bench.archs) - 1}")
    return index


def _genotype_arch(text: str) -> str:
    """The benchmark string of a string or genotype file, validated (one line per mistake)."""
    genotype = gt.load(text)
    if not isinstance(genotype, gt.Nb201Genotype):
        raise UsageError(f"{text} is a {genotype.kind} genotype; pass an nb201 genotype, a benchmark string or an "
                         "index")
    return genotype.arch_string()


def format_table(index: int, arch: str, accuracies: dict) -> str:
    seeds = max((a.seeds for a in accuracies.values()), default=0)
    lines = [f"architecture {index}: {arch}",
             f"{'dataset':<16}{'valid':>8}{'test':>8}   (top-1 %, 200 epochs, mean of {seeds} seeds)"]
    for dataset in DATASETS:
        acc = accuracies[dataset]
        cells = "".join(f"{v:>8.2f}" if v is not None else f"{'-':>8}" for v in (acc.valid, acc.test))
        lines.append(f"{dataset:<16}{cells}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    bench = open_benchmark(args.benchmark)
    index = resolve_index(bench, args.arch)
    accuracies = bench.accuracies(index)
    arch = bench.arch(index)
    if args.json != "-":  # JSON on standard output stands alone, for pipes
        print(format_table(index, arch, accuracies))
    if args.json:
        doc = dict(index=index, arch=arch, schedule_epochs=200,
                   accuracy={d: accuracies[d].as_dict() for d in DATASETS})
        text = json.dumps(doc, indent=2) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            write_text(args.json, text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
