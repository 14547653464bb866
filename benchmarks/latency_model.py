#!/usr/bin/env python
"""How well a latency table's sum predicts measured latency: random children of the chain space, end to end.

    cdarts-latency-table --space chain --runtime onnxruntime-cpu --input-size 224 --threads 2 --out tables/
    python benchmarks/latency_model.py --table tables/latency_table.json --children 100 --out docs/results/latency_model

For ``--children`` random children of the table's base (seeded, drawn independently of the
table's own ``--validate`` children; ``--sampling spread``, the default, draws them from the
cheapest to the dearest corner of the space, see
:func:`cdarts_deploy.deploy.latency_measure.random_children`): the table's prediction (sum of its parts) against the
median latency of the whole network exported and run on the same runtime with the table's
threads, warm-up and runs.  Printed and written to ``<out>.json`` with a scatter ``<out>.png``:

* Spearman rank correlation of the sum against the measured latency (a positive correction keeps ranks);
* the share of children whose prediction is within +-5% and +-10% of the measured latency (the accuracy
  latency predictors report), and mean and max relative error, of the raw sum (before), and after each correction of
  :func:`cdarts_deploy.latency_stats.fit_correction`, two-fold cross-validated (fitted on one half of the
  children, scored on the other), plus the table's stored correction (fitted on other children) if any;
* children are timed in interleaved rounds (as the table's parts), so that load that comes and goes falls
  on all of them alike;
* the load average before and after, since other processes on the machine slow long runs more than short ones.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from cdarts_deploy.atomic_files import write_text
from cdarts_deploy.commands.args import OneLineParser
from cdarts_deploy.deploy.environment import environment
from cdarts_deploy.deploy.latency_measure import PartTimer, measure_genotypes, random_children
from cdarts_deploy.deploy.versions import cpu_load, cpu_model
from cdarts_deploy.drawing.figures import pyplot, save_figure
from cdarts_deploy.latency_stats import CORRECTIONS, fit_correction, relative_errors, spearman
from cdarts_deploy.latency_table_format import describe, genotype_candidates, load


def main() -> int:
    p = OneLineParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", required=True, help="latency table (cdarts-latency-table)")
    p.add_argument("--children", type=int, default=100,
                   help="random children measured end to end (default 100; at least 4 for the two folds)")
    p.add_argument("--seed", type=int, default=1,
                   help="seed of the children (default 1; the table's --validate uses 0)")
    p.add_argument("--sampling", choices=("spread", "uniform"), default="spread",
                   help="spread: children from the cheapest to the dearest corner of the space (default); uniform: "
                        "a uniform candidate per block (latencies cluster around the mean)")
    p.add_argument("--iters", type=int, default=0, help="timed runs per child (default: the table's)")
    p.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default: the table's)")
    p.add_argument("--out", default="docs/results/latency_model", help="output stem for .json and .png")
    args = p.parse_args()
    if args.children < 4:
        p.error(f"--children {args.children}: need at least 4 (two folds of two for the held-out corrections)")
    table = load(args.table)
    settings = table.conditions.get("measurement", {})
    threads = int(settings.get("threads") or 0)
    warmup, iters = int(settings.get("warmup", 10)), args.iters or int(settings.get("iters", 50))
    load_before = cpu_load()
    children = random_children(table, args.children, args.seed, spread=args.sampling == "spread")
    raw = [table.raw_ms(genotype_candidates(g)) for g in children]
    rounds = args.rounds or int(settings.get("rounds", 5))
    clock = settings.get("clock") or "wall"  # the table's clock: parts and children timed alike
    started = time.perf_counter()
    with PartTimer(table.runtime, threads=threads, warmup=warmup, iters=iters, rounds=rounds,
                   exporter=settings.get("exporter") or "torchscript", clock=clock) as timer:
        bar = tqdm(total=len(children), desc="children", unit="child")
        measured = measure_genotypes(children, table, timer, progress=bar.update)
        bar.close()
    seconds = time.perf_counter() - started
    load_after = cpu_load()

    half = len(children) // 2
    folds = [(list(range(half)), list(range(half, len(children)))),
             (list(range(half, len(children))), list(range(half)))]

    def cross_validated(mode: str) -> dict:
        pred = [0.0] * len(children)
        for fit_on, score_on in folds:
            scale, offset = fit_correction([raw[i] for i in fit_on], [measured[i] for i in fit_on], mode)
            for i in score_on:
                pred[i] = scale * raw[i] + offset
        return {**relative_errors(pred, measured), "predicted_ms": [round(v, 4) for v in pred]}

    corrections = {mode: cross_validated(mode) for mode in CORRECTIONS}
    stored = None
    if table.correction:
        pred = [table.corrected(r) for r in raw]
        stored = {"mode": table.correction.get("mode"), "scale": table.scale, "offset_ms": table.offset_ms,
                  "fitted_on_children": table.correction.get("children"), **relative_errors(pred, measured),
                  "predicted_ms": [round(v, 4) for v in pred]}
    rho = spearman(raw, measured)
    result = {
        "table": describe(table, args.table), "cpu": cpu_model(),
        "cpu_isa": [k for k, on in environment()["cpu"]["isa"].items() if on],
        "affinity": sorted(os.sched_getaffinity(0)),
        "runtime": table.runtime, "input_shape": [table.batch, 3, table.input_size,
                                                                        table.input_size],
        "base": table.base, "network": table.network, "threads": threads or None, "warmup": warmup, "iters": iters,
        "children": len(children), "sampling": args.sampling, "seed": args.seed, "seconds": round(seconds, 1),
        "spearman": rho, "raw": relative_errors(raw, measured),
        "cross_validated_corrections": corrections, "table_correction": stored,
        "raw_ms": [round(v, 4) for v in raw], "measured_ms": [round(v, 4) for v in measured],
        "rounds": rounds, "clock": clock, "load_before": load_before, "load_after": load_after,
        "table_load": table.conditions.get("load"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    _scatter(result, out.with_suffix(".png"))

    markdown = _markdown(result)
    write_text(out.with_suffix(".md"), markdown)
    print(markdown, end="")
    print(f"results: {out.with_suffix('.json')}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")
    return 0


def _markdown(result: dict) -> str:
    """The report as Markdown: conditions, then one row per prediction (before and after correction)."""
    t, lb, la = result["table"], result["load_before"]["loadavg"], result["load_after"]["loadavg"]
    lines = [f"# Latency table against {result['children']} random children measured end to end", "",
             f"{result['runtime']}, input {result['input_shape']}, {result['threads'] or 'default'} thread(s) "
             f"(logical CPUs {result.get('affinity')}), {result['cpu']} ({', '.join(result.get('cpu_isa') or [])}); "
             f"table `{t['file']}` (SHA-256 "
             f"{t['sha256'][:12]}), measured at load average {(t.get('load') or {}).get('loadavg')}; "
             f"{result['children']} {result['sampling']} children (seed {result['seed']}), median of "
             f"{result['iters']} runs on the {result.get('clock', 'wall')} clock in {result['rounds']} interleaved "
             f"rounds; {result['seconds']:.0f} s, load average {lb} before, {la} after.", "",
             f"Spearman rank correlation, table sum vs measured: {result['spearman']:.3f}", "",
             "| prediction | within 5% | within 10% | mean rel err | max rel err | mean signed |",
             "|---|---|---|---|---|---|"]

    def row(name: str, e: dict) -> None:
        lines.append(f"| {name} | {e['within_5pct']:.0%} | {e['within_10pct']:.0%} | {e['mean_rel_error']:.1%} | "
                     f"{e['max_rel_error']:.1%} | {e['mean_signed_rel_error']:+.1%} |")

    row("table sum (before)", result["raw"])
    for mode, e in result["cross_validated_corrections"].items():
        row(f"{mode} correction, fitted on one half, scored on the other", e)
    stored = result["table_correction"]
    if stored:
        row(f"table's {stored['mode']} correction (x{stored['scale']:.3f} {stored['offset_ms']:+.2f} ms, fitted on "
            f"its own {stored['fitted_on_children']} children)", stored)
    return "\n".join(lines) + "\n"


def _scatter(result: dict, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    m = result["measured_ms"]
    ax.scatter(m, result["raw_ms"], label=f"table sum (Spearman {result['spearman']:.2f}, "
                                          f"{result['raw']['within_10pct']:.0%} within 10%)", marker="o")
    best = min(result["cross_validated_corrections"].items(), key=lambda kv: kv[1]["mean_rel_error"])
    ax.scatter(m, best[1]["predicted_ms"], label=f"{best[0]} correction, held out ({best[1]['within_10pct']:.0%} "
                                                 f"within 10%, {best[1]['within_5pct']:.0%} within 5%)", marker="x")
    for band in (0.05, 0.10):
        ax.fill_between([min(m) * 0.9, max(m) * 1.05], [min(m) * 0.9 * (1 - band), max(m) * 1.05 * (1 - band)],
                        [min(m) * 0.9 * (1 + band), max(m) * 1.05 * (1 + band)], color="grey", alpha=0.12, lw=0)
    lo = min(min(m), min(result["raw_ms"])) * 0.9
    hi = max(max(m), max(result["raw_ms"]), max(best[1]["predicted_ms"])) * 1.05
    ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1, linestyle="--", label="predicted = measured")
    ax.set_xlabel("measured latency, whole network (ms); grey bands: +-5%, +-10%")
    ax.set_ylabel("predicted latency (ms)")
    shape = "x".join(str(v) for v in result["input_shape"])
    ax.set_title(f"{result['runtime']} {shape}, {result['threads'] or 'default'} thread(s), "
                 f"{result.get('clock', 'wall')} clock: {result['children']} random children", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
