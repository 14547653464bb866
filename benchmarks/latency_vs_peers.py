#!/usr/bin/env python
"""A network found for this CPU under the latency of hand-designed peers, measured next to them in one run.

    taskset -c 1 python benchmarks/latency_vs_peers.py --out docs/results/latency_vs_peers   # 10-20 min

Steps, each timed and recorded with the load average before and after:

1. digits: scikit-learn's handwritten digits (tools/prepare_digits.py), upscaled to 224 px, as the search's data;
2. table: ``cdarts-latency-table`` for the chain space (``cdarts_b_base``, the digits' 10 classes) on ONNX Runtime
   CPU with ``--threads`` intra-op threads (default 1, timed on ``--clock cpu``: ONNX Runtime's one thread's CPU
   time, see :mod:`cdarts_deploy.deploy.latency_measure`), plus ``--validate`` random children end to end for
   its correction;
3. peers: EfficientNet-B0, MobileNetV3-Large and MnasNet (timm, random weights, 10-class heads like the search's
   networks) exported with the table's exporter and timed at batch 1 in interleaved rounds;
4. search: the latency-budgeted chain search at 224 px, once with EfficientNet-B0's measured latency as the limit
   and once with MnasNet's; the limit given to the search is the peer's latency divided by ``1 + margin``
   (default: the table's largest relative error on its validation children, at most 10%), so that a child
   predicted at the limit still measures under the peer's latency.  When a limit lies below the cheapest child
   of ``cdarts_b_base``, the step measures a table for the smaller ``cdarts_a_base`` (and then for it without
   squeeze-excite, :data:`BASES`) and searches on the first base that fits;
5. final: every found network and every peer timed again at batch 1 and 32, interleaved in one set of rounds per
   batch size, with multiply-adds and parameters; ratios against EfficientNet-B0 come from this one step.

Writes ``<out>.json``, ``<out>.md``, ``<out>.png`` (latency against multiply-adds, peers and found networks) and the
table(s) as ``<out>_table_<base>.json``.  The search runs a few dozen steps on a few hundred images: what it finds
is decided by the latency term and the budget repair; its accuracy is not evidence of anything at this scale.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import timm
import torch
from tqdm import tqdm

from backbones.chain_net import create_chain_model
from backbones.complexity import count_macs, count_params
from cdarts_deploy import genotype as gt
from cdarts_deploy.atomic_files import write_text
from cdarts_deploy.commands.args import OneLineParser
from cdarts_deploy.deploy.latency_measure import (
    CLOCKS,
    PartTimer,
    check_clock,
    correction_from,
    measure_chain_table,
    random_children,
    validate_table,
)
from cdarts_deploy.deploy.versions import conditions, cpu_load
from cdarts_deploy.drawing.figures import pyplot, save_figure
from cdarts_deploy.errors import UserError
from cdarts_deploy.latency_table_format import CANDIDATES, LatencyTable, describe, save, searchable_positions
from search.cli import main as search_main

REPO = Path(__file__).resolve().parents[1]
PEERS = (("EfficientNet-B0", "efficientnet_b0"), ("MobileNetV3-Large", "mobilenetv3_large_100"),
         ("MnasNet", "mnasnet_100"))
BUDGETS = (("EfficientNet-B0", "at EfficientNet-B0's latency"), ("MnasNet", "at MnasNet's latency"))
#: Bases in the order tried: a later one only when a limit is below every earlier one's cheapest child.
#: ``cdarts_a_base_no_se``: CDARTS-a's base without squeeze-excite, which costs a CPU at batch 1 more than its
#: multiply-adds say (MnasNet has none).
BASES = ("cdarts_b_base", "cdarts_a_base", "cdarts_a_base_no_se")
NETWORK = {"num_classes": 10, "stem_channels": 16, "head_channels": 1280}


class Steps:
    """Wall time and load average of every step."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        load, start = os.getloadavg(), time.perf_counter()
        print(f"== {name} (load average {load[0]:.2f})", flush=True)
        value = fn()
        seconds = time.perf_counter() - start
        self.rows.append({"step": name, "seconds": round(seconds, 1), "loadavg_before": [round(v, 2) for v in load],
                          "loadavg_after": [round(v, 2) for v in os.getloadavg()]})
        print(f"   {name}: {seconds:.0f} s", flush=True)
        return value


def base_stages(label: str) -> list[list[str]]:
    """The arch strings of a base in :data:`BASES`."""
    if label.endswith("_no_se"):
        return [[a.replace("_se0.25", "") for a in stage] for stage in gt.base_from_option(label[:-len("_no_se")])]
    return gt.base_from_option(label)


def cheapest_ms(table: LatencyTable) -> float:
    """Predicted (corrected) latency of the cheapest child of the table's base."""
    parts = [min(sum(table.block_ms(s, m, c) for s, m in mods) for c in CANDIDATES)
             for _, mods in searchable_positions(table.base)]
    return table.corrected(table.fixed_ms() + sum(parts))


def search_limit(peer_ms: float, table: LatencyTable, margin: float) -> tuple[float, float]:
    """``(limit, margin)``: the latency limit handed to the search for a peer's measured latency.  A negative
    ``margin`` means the table's largest relative error after its correction, at most 10%."""
    if margin < 0:
        margin = min(0.10, float((table.correction or {}).get("after", {}).get("max_rel_error") or 0.0))
    return peer_ms / (1 + margin), margin


def measure_table(base: str, args: argparse.Namespace, out: Path) -> tuple[LatencyTable, Path]:
    timer_args = dict(threads=args.threads, warmup=args.warmup, iters=args.iters, rounds=args.rounds,
                      clock=args.clock)
    with PartTimer("onnxruntime-cpu", exporter=args.exporter, **timer_args) as timer:
        table = measure_chain_table(base_stages(base), NETWORK, args.input_size, 1, timer)
        children = random_children(table, args.validate, seed=0, spread=True)
        bar = tqdm(total=len(children), desc="validation children", unit="child")
        table.correction = correction_from(validate_table(table, timer, children, progress=bar.update), "scale")
        bar.close()
    path = out.parent / f"{out.name}_table_{base}.json"
    save(table, path)
    c = table.correction
    print(f"   {base}: {len(table.blocks)} blocks; correction x{c['scale']:.3f}; after it "
          f"{c['after']['within_10pct']:.0%} of {c['children']} children within 10%; cheapest child "
          f"{cheapest_ms(table):.2f} ms", flush=True)
    return table, path


def peer_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=NETWORK["num_classes"]).eval()


def time_models(models: dict[str, torch.nn.Module], batch: int, side: int, args: argparse.Namespace,
                iters: int, warmup: int) -> dict[str, dict[str, float]]:
    """Median ms of every model at one batch size on both clocks, all timed in the same interleaved rounds."""
    with PartTimer("onnxruntime-cpu", threads=args.threads, warmup=warmup, iters=iters, rounds=args.rounds,
                   exporter=args.exporter, clock=args.clock) as timer:
        bar = tqdm(total=len(models), desc=f"batch {batch}", unit="network")
        timer.time_all([(m, (batch, 3, side, side)) for m in models.values()], progress=bar.update)
        bar.close()
    return {name: {clock: timer.medians[clock][k] for clock in CLOCKS} for k, name in enumerate(models)}


def run_search(name: str, base: str, limit: float, table_path: Path, data: Path, args: argparse.Namespace,
               out: Path) -> dict[str, Any]:
    """The latency-budgeted chain search (``cdarts-search``) with ``limit`` ms on ``base``'s table."""
    base_file = out.parent / f"{base}.json"  # a file: --base takes names of the built-in bases only
    write_text(base_file, json.dumps(base_stages(base)))
    argv = ["--space", "chain", "--base", str(base_file), "--dataset", "imagefolder", "--data-root", str(data),
            "--input-size", str(args.input_size), "--out", str(out), "--latency-table", str(table_path),
            "--latency-budget", f"{limit:.4f}ms", "--epochs", str(args.search_epochs), "--warmup-epochs", "0",
            "--batch-size", str(args.search_batch), "--max-steps", str(args.search_steps), "--eval-steps", "2",
            "--lr", "0.05", "--arch-lr", "0.05", "--budget-weight", "5", "--threads", str(args.threads),
            "--seed", "0", "--no-measure-latency", "--no-progress"]
    code = search_main(argv)
    if code != 0:
        raise SystemExit(f"the search {name} failed (exit {code}); see the line above")
    log = [json.loads(r) for r in (out / "log.jsonl").read_text().splitlines()]
    return {"genotype": gt.load(out / "genotype.json"), "log": log[-1]}


def write_markdown(result: dict[str, Any], path: Path) -> None:
    c = result["conditions"]
    lines = ["# A chain network found for this CPU against EfficientNet-B0, MobileNetV3-Large and MnasNet", "",
             f"ONNX Runtime CPU, {c['threads']} intra-op thread, process pinned to logical CPU(s) {c['affinity']}, "
             f"{c['cpu']} ({', '.join(k for k, on in c['isa'].items() if on)}); "
             f"ORT {c['versions'].get('onnxruntime')}, torch "
             f"{c['versions'].get('torch')}, timm {c['versions'].get('timm')}; exporter {c['exporter']}; load average "
             f"{c['loadavg_start']} at start, {c['loadavg_end']} at the end. Input "
             f"{c['input_shape'][2]}x{c['input_shape'][3]}, 10-class heads, random "
             f"weights; median of {result['final']['iters_b1']} (batch 1) / {result['final']['iters_b32']} (batch 32) "
             f"runs per network, all networks of a batch size timed in the same {c['rounds']} interleaved rounds.", "",
             f"Latency columns: the {c['clock']} clock ("
             + ("CPU time of ONNX Runtime's one thread per run, which computes on the calling thread: the latency "
                "on a core of its own, without the time other processes on this shared machine took the core in "
                "between" if c["clock"] == "cpu" else "elapsed time per run")
             + "); the wall-clock medians of the same runs are beside them.", "",
             "| network | MACs/img | params | batch 1 ms | vs EffNet-B0 | batch 32 ms | vs EffNet-B0 "
             "| wall b1 ms (vs EffNet-B0) | wall b32 ms (vs EffNet-B0) | table predicted b1 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["networks"]:
        pred = f"{row['predicted_ms']:.2f} ms" if row.get("predicted_ms") else ""
        lines.append(f"| {row['name']} | {row['macs'] / 1e6:.0f}M | {row['params'] / 1e6:.2f}M | {row['b1_ms']:.2f} | "
                     f"{row['b1_vs_effnet']:.2f}x | {row['b32_ms']:.1f} | {row['b32_vs_effnet']:.2f}x | "
                     f"{row['b1_wall_ms']:.2f} ({row['b1_wall_vs_effnet']:.2f}x) | {row['b32_wall_ms']:.1f} "
                     f"({row['b32_wall_vs_effnet']:.2f}x) | {pred} |")
    lines += ["", "Budgets (peer's batch-1 latency measured in step 3; the search's limit is that / (1 + margin)):", ""]
    for s in result["searches"]:
        head = (f"- **{s['name']}**: peer {s['peer_ms']:.2f} ms, margin {s['margin']:.1%}, limit {s['limit_ms']:.2f} "
                f"ms on `{s['base']}` (cheapest child {s['cheapest_ms']:.2f} ms)")
        if s["genotype"] is None:
            lines.append(f"{head}. {s['verdict']}")
            continue
        lines.append(f"{head}; found {s['macs'] / 1e6:.0f}M MACs, predicted {s['predicted_ms']:.2f} ms; measured "
                     f"in the final step at {s['measured_b1_vs_peer']:.2f}x the peer. {s['verdict']}")
    if any(s["base"].endswith("_no_se") for s in result["searches"]):
        lines += ["", "`cdarts_a_base_no_se` is CDARTS-a's base with the squeeze-excite of every block removed "
                  "(MnasNet has none): tried only when a limit is below the cheapest child of `cdarts_b_base` and "
                  "`cdarts_a_base`."]
    lines += ["", "Steps:", "", "| step | seconds | load before | load after |", "|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['seconds']:.0f} | {r['loadavg_before'][0]:.2f} | {r['loadavg_after'][0]:.2f} |"
              for r in result["steps"]]
    lines += ["", f"Total {result['seconds'] / 60:.1f} min.", "", result["accuracy_note"], ""]
    write_text(path, "\n".join(lines))


def draw(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, key, title in ((axes[0], "b1_ms", "batch 1"), (axes[1], "b32_ms", "batch 32")):
        for row in result["networks"]:
            found = row["kind"] == "found"
            ax.scatter(row["macs"] / 1e6, row[key], marker="*" if found else "o", s=160 if found else 60,
                       color="tab:red" if found else "tab:blue")
            ax.annotate(row["name"], (row["macs"] / 1e6, row[key]), textcoords="offset points",
                        xytext=(6, -12) if found else (5, 4), fontsize=8)  # found below, peers above: no overlap
        ax.set_xlabel("multiply-adds per image (M)")
        ax.set_ylabel("ONNX Runtime latency (ms)")
        ax.set_title(f"{title}, {result['conditions']['threads']} thread, {result['conditions']['clock']} clock, "
                     "same rounds", fontsize=9)
    fig.suptitle("found for this CPU (red stars) vs hand-designed peers (blue)", fontsize=10)
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)


def main() -> int:
    p = OneLineParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/results/latency_vs_peers", help="output stem (.json, .md, .png)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op and torch threads (default 1)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--exporter", default="torchscript", choices=("torchscript", "dynamo"))
    p.add_argument("--warmup", type=int, default=10, help="untimed runs per table part and batch-1 network")
    p.add_argument("--iters", type=int, default=50, help="timed runs per table part and batch-1 network")
    p.add_argument("--iters-b32", type=int, default=10, help="timed runs per network at batch 32 (default 10)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    p.add_argument("--clock", choices=CLOCKS, default="cpu",
                   help="cpu: CPU time of ONNX Runtime's one thread, what a core of its own would take (default, "
                        "for a machine other processes share; needs --threads 1); wall: elapsed time. Both are "
                        "recorded for the final step")
    p.add_argument("--validate", type=int, default=10, help="children timed end to end for the table's correction")
    p.add_argument("--margin", type=float, default=-1.0,
                   help="relative margin between a peer's latency and the search's limit (default: the table's "
                        "largest error after its correction, at most 0.10)")
    p.add_argument("--per-class", type=int, default=40, help="digits per class for the search (default 40)")
    p.add_argument("--search-epochs", type=int, default=2)
    p.add_argument("--search-steps", type=int, default=8, help="search steps per epoch (default 8)")
    p.add_argument("--search-batch", type=int, default=8)
    args = p.parse_args()
    try:  # refused before anything is measured or written
        check_clock(args.clock, "onnxruntime-cpu", args.threads)
    except UserError as exc:
        p.error(str(exc))
    small = [f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
             if k in ("iters", "iters_b32", "rounds", "per_class", "search_epochs", "search_steps", "search_batch")
             and v < 1] + ([f"--validate {args.validate}"] if args.validate < 2 else [])
    if small or args.input_size < 32:
        p.error(f"{(small or [f'--input-size {args.input_size}'])[0]}: too small (counts at least 1, --validate at "
                "least 2 for the correction, --input-size at least 32)")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    steps, started = Steps(), time.perf_counter()
    start_cond = conditions(args.threads, "cpu")
    side = args.input_size

    with tempfile.TemporaryDirectory(prefix="latency-vs-peers-") as tmp:
        data = Path(tmp) / "digits"
        steps.run("digits", lambda: subprocess.run(
            [sys.executable, str(REPO / "tools" / "prepare_digits.py"), "--out", str(data), "--size", str(side),
             "--per-class", str(args.per_class)], check=True))
        tables = {BASES[0]: steps.run(f"table {BASES[0]}", lambda: measure_table(BASES[0], args, out))}
        peers = {label: peer_model(name) for label, name in PEERS}
        budget_both = steps.run("peers batch 1", lambda: time_models(peers, 1, side, args, args.iters, args.warmup))
        budget_ms = {name: v[args.clock] for name, v in budget_both.items()}
        searches = []
        for peer, what in BUDGETS:
            for base in BASES:  # the first base whose cheapest child fits under the limit
                if base not in tables:
                    tables[base] = steps.run(f"table {base}", lambda: measure_table(base, args, out))
                limit, margin = search_limit(budget_ms[peer], tables[base][0], args.margin)
                if limit >= cheapest_ms(tables[base][0]):
                    break
            table, table_path = tables[base]
            entry = {"name": f"found {what}", "peer": peer, "peer_ms": budget_ms[peer], "margin": margin,
                     "limit_ms": limit, "base": base, "cheapest_ms": cheapest_ms(table),
                     "table": describe(table, table_path), "genotype": None}
            searches.append(entry)
            if limit < entry["cheapest_ms"]:  # the search would refuse it: say so instead of searching
                entry["verdict"] = (f"Not searched: the limit is below the cheapest child of {base} "
                                    f"({entry['cheapest_ms']:.2f} ms predicted); a shallower or narrower base "
                                    "(fewer blocks per stage, or a smaller head) is needed to get there.")
                print(f"   {entry['verdict']}", flush=True)
                continue
            found = steps.run(f"search {what}", lambda: run_search(peer, base, limit, table_path, data, args,
                                                                   Path(tmp) / f"search_{peer}"))
            entry.update(genotype=found["genotype"], predicted_ms=table.predict_ms(found["genotype"]),
                         last_epoch=found["log"])

    searches_run = [s for s in searches if s["genotype"] is not None]
    models: dict[str, torch.nn.Module] = {}
    for s in searches_run:
        torch.manual_seed(0)
        models[s["name"]] = create_chain_model(s["genotype"], num_classes=NETWORK["num_classes"]).eval()
    models.update(peers)
    b1_both = steps.run("final batch 1", lambda: time_models(models, 1, side, args, args.iters, args.warmup))
    b32_both = steps.run("final batch 32", lambda: time_models(models, 32, side, args, args.iters_b32, 2))
    b1 = {name: v[args.clock] for name, v in b1_both.items()}
    b32 = {name: v[args.clock] for name, v in b32_both.items()}
    end_load = os.getloadavg()

    rows = []
    for name, model in models.items():
        s = next((s for s in searches_run if s["name"] == name), None)
        rows.append({"name": name, "kind": "found" if s else "peer", "macs": count_macs(model, (side, side)),
                     "params": count_params(model), "b1_ms": round(b1[name], 4), "b32_ms": round(b32[name], 3),
                     "b1_wall_ms": round(b1_both[name]["wall"], 4), "b32_wall_ms": round(b32_both[name]["wall"], 3),
                     "b1_cpu_ms": round(b1_both[name]["cpu"], 4), "b32_cpu_ms": round(b32_both[name]["cpu"], 3),
                     "b1_wall_vs_effnet": b1_both[name]["wall"] / b1_both["EfficientNet-B0"]["wall"],
                     "b32_wall_vs_effnet": b32_both[name]["wall"] / b32_both["EfficientNet-B0"]["wall"],
                     "b1_vs_effnet": b1[name] / b1["EfficientNet-B0"],
                     "b32_vs_effnet": b32[name] / b32["EfficientNet-B0"],
                     "predicted_ms": round(s["predicted_ms"], 4) if s else None})
    for s in searches_run:
        ratio = b1[s["name"]] / b1[s["peer"]]
        s["measured_b1_vs_peer"] = ratio
        s["macs"] = next(r["macs"] for r in rows if r["name"] == s["name"])
        s["verdict"] = (f"At or below {s['peer']} at batch 1 in the same rounds." if ratio <= 1.0 else
                        f"{(ratio - 1):.1%} above {s['peer']} at batch 1 in the same rounds.")
        s["genotype"] = s["genotype"].arch_strings()
    env = start_cond.pop("environment")
    result = {
        "format": "cdarts-latency-vs-peers", "version": 1, "seconds": round(time.perf_counter() - started, 1),
        "conditions": {**start_cond, "isa": env["cpu"]["isa"], "affinity": sorted(os.sched_getaffinity(0)),
                       "exporter": args.exporter, "rounds": args.rounds, "threads": args.threads,
                       "clock": args.clock,
                       "loadavg_start": [round(v, 2) for v in steps.rows[0]["loadavg_before"]],
                       "loadavg_end": [round(v, 2) for v in end_load], "load_end": cpu_load(),
                       "seeds": {"weights": 0, "search": 0, "validation_children": 0},
                       "input_shape": [1, 3, side, side], "num_classes": NETWORK["num_classes"]},
        "final": {"iters_b1": args.iters, "warmup_b1": args.warmup, "iters_b32": args.iters_b32, "warmup_b32": 2},
        "budget_step_ms": {k: {c: round(t, 4) for c, t in v.items()} for k, v in budget_both.items()},
        "networks": rows, "searches": searches, "steps": steps.rows,
        "search_settings": {"epochs": args.search_epochs, "steps_per_epoch": args.search_steps,
                            "batch": args.search_batch, "images_per_class": args.per_class},
        "accuracy_note": (
            f"Accuracy: each search ran {args.search_epochs} x {args.search_steps} steps of {args.search_batch} "
            f"images on {args.per_class} digits per class upscaled from 8x8 to {side} px. That decides nothing "
            "about accuracy: the choices are driven by the latency term and the budget repair, and the weights "
            "are far from trained (the last epoch's search and evaluation accuracies are in the JSON). Whether the "
            "found network matches EfficientNet-B0's accuracy needs a search and a retraining on the user's data "
            "(ImageNet for the published comparison)."),
    }
    write_text(out.with_suffix(".json"), json.dumps(result, indent=1, default=str) + "\n")
    write_markdown(result, out.with_suffix(".md"))
    draw(result, out.with_suffix(".png"))
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
