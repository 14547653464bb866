"""``cdarts-search``: CDARTS (Algorithm 1, paper Section 3.2) in the cell or the chain space, single process
or data-parallel under torchrun.

    cdarts-search --dataset cifar10 --data-root DATA/cifar-10-batches-py --out runs/c10
    cdarts-search --dataset imagefolder --data-root DATA/imagenet --out runs/in --warmup-epochs 10
    cdarts-search --space chain --dataset imagefolder --data-root DATA/imagenet --out runs/chain --budget 300e6
    torchrun --nproc_per_node=2 -m search --preset cpu-smoke --dataset cifar10 ...
    cdarts-search --space chain ... --latency-table table.json --latency-budget 12ms   # latency on a runtime
    cdarts-search --out runs/c10 --resume          # continue a run after an interruption

User errors (bad options, data, output folder or checkpoint, a folder another run is writing) are one
line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from cdarts_deploy import bounded_json
from cdarts_deploy.atomic_files import write_text
from cdarts_deploy.commands.args import (
    OneLineParser,
    add_bad_images_option,
    add_device_option,
    add_out_dir_option,
    add_progress_option,
    add_threads_option,
    run_main,
    square_size,
)
from cdarts_deploy.data.distributed import DistContext, init_distributed, shutdown
from cdarts_deploy.deploy.latency_measure import PartTimer, measure_genotype, require_runtime
from cdarts_deploy.deploy.versions import cpu_load, cpu_model
from cdarts_deploy.errors import UserError
from cdarts_deploy.latency_table_format import describe as describe_table

from .cell_space import CellSpace
from .chain_space import ChainSpace, load_latency_table
from .checkpoint import load_checkpoint
from .config import (
    PRESETS,
    RUNTIME_ONLY,
    SPACE_DEFAULTS,
    SearchConfig,
    apply_overrides,
    check_config,
    config_fields,
    latency_budget_ms,
    read_config_file,
    resolved_defaults,
)
from .data import build_search_data
from .errors import SearchInputError
from .nb201_space import Nb201Space
from .run_lock import RunLock
from .trainer import CHECKPOINT_FORMAT, CyclicSearch

PROG = "cdarts-search"
INTERRUPTED = "interrupted; continue with --resume"
RUN_FILE = "run.json"

LATENCY_FILE = "latency.json"
RUN_FILES = (RUN_FILE, "checkpoint.pt", "genotype.json", "log.jsonl", "cells.png", "choices.png", "child.pth",
             LATENCY_FILE, "benchmark.png", "cell.png")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description="Cyclic Differentiable Architecture Search (CDARTS) in the DARTS cell space or the chain "
        "(MBConv) space. Defaults are the paper's CIFAR settings (Table 1); the chain space changes a few "
        f"({', '.join(f'--{k.replace(chr(95), chr(45))} {v}' for k, v in SPACE_DEFAULTS['chain'].items())}).",
        argument_default=argparse.SUPPRESS,  # so that only options actually given override presets and configs
    )
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="a bundle of settings: paper (Table 1 CIFAR, the defaults), paper-imagenet, cpu-smoke, tiny "
                        "(cell space); smoke32, smoke64 (chain space)")
    p.add_argument("--config", help="JSON file of option values (names as on the command line)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    shared = {"threads": add_threads_option, "progress": add_progress_option, "device": add_device_option,
              "out": add_out_dir_option, "bad_images": add_bad_images_option}
    for f in config_fields():
        if f.name in shared:  # spelled, typed and explained as in every other command
            shared[f.name](p, default=argparse.SUPPRESS)
            continue
        flag = "--" + f.name.replace("_", "-")
        kw: dict[str, Any] = {"help": f"{f.metadata['help']} (default: {f.default!r})"}
        if isinstance(f.default, bool):
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = square_size if f.name == "input_size" else type(f.default)
            if "choices" in f.metadata:
                kw["choices"] = f.metadata["choices"]
        p.add_argument(flag, **kw)
    return p


def resolve_config(args: argparse.Namespace) -> tuple[SearchConfig, dict[str, Any]]:
    """The merged configuration and the options given explicitly (preset, config file or flags)."""
    explicit: dict[str, Any] = {}
    if getattr(args, "preset", None):
        explicit.update(PRESETS[args.preset])
    if getattr(args, "config", None):
        explicit = apply_overrides(explicit, read_config_file(args.config), args.config)
    flags = {f.name: getattr(args, f.name) for f in config_fields() if hasattr(args, f.name)}
    explicit.update(flags)
    base = apply_overrides(dataclasses.asdict(SearchConfig()), {"space": explicit.get("space", "cell")}, "options")
    base = apply_overrides(base, SPACE_DEFAULTS[base["space"]], "space defaults")
    merged = apply_overrides(base, explicit, "options")
    return SearchConfig(**merged), explicit


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k not in RUNTIME_ONLY}


def prepare_out(cfg: SearchConfig, explicit: dict[str, Any], resume: bool) -> tuple[SearchConfig, dict | None]:
    """Check --out against this invocation; on --resume return the stored config and the checkpoint."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise SearchInputError(f"--out {out}: exists and is not a directory; choose a directory path")
    present = [f for f in RUN_FILES if (out / f).exists()]
    if not resume:
        if present:
            raise SearchInputError(f"--out {out}: already holds a search run ({', '.join(present)}); "
                                   "pass --resume to continue it or choose another --out")
        return cfg, None
    run_path = out / RUN_FILE
    if not run_path.is_file():
        raise SearchInputError(f"--out {out}: no {RUN_FILE} to resume; start the run without --resume")
    try:
        stored = bounded_json.load(run_path, expected="a cdarts-search run description")["config"]
        stored_cfg = SearchConfig(**apply_overrides(dataclasses.asdict(SearchConfig()), stored, str(run_path)))
    except (bounded_json.JSONInputError, KeyError, TypeError):
        raise SearchInputError(f"{run_path}: unreadable run description; restore it or start a new --out") from None
    changed = [k for k, v in explicit.items() if k not in RUNTIME_ONLY and getattr(stored_cfg, k) != v]
    if changed:
        shown = ", ".join(f"--{k.replace('_', '-')} {getattr(stored_cfg, k)!r} -> {explicit[k]!r}" for k in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise SearchInputError(f"--out {out}: --resume with options that differ from the run's ({shown}{more}); "
                               "resume with the run's own options or choose another --out")
    runtime = {k: v for k, v in explicit.items() if k in RUNTIME_ONLY}
    cfg = dataclasses.replace(stored_cfg, **dict(runtime, out=str(out)))
    state = load_checkpoint(out / "checkpoint.pt")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise SearchInputError(f"{out / 'checkpoint.pt'}: not a cdarts-search checkpoint of this version; "
                               "start a new --out")
    if _comparable(state.get("config", {})) != _comparable(dataclasses.asdict(stored_cfg)):
        raise SearchInputError(f"{out / 'checkpoint.pt'}: belongs to a different run than {run_path}; "
                               "restore the matching pair or start a new --out")
    return cfg, state


def run(args: argparse.Namespace) -> int:
    cfg, explicit = resolve_config(args)
    resume = bool(getattr(args, "resume", False))
    if not cfg.out:
        raise SearchInputError("missing --out; give the directory for genotype.json, logs and checkpoints")
    lock = RunLock()
    writer = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes
    try:
        out = Path(cfg.out)
        if writer and out.is_dir():
            lock.acquire(out)  # before reading the folder: a running search is named, not mistaken for a finished one
        cfg, state = prepare_out(cfg, explicit, resume)
        check_config(cfg)
        _check_latency_options(cfg)
        if not cfg.data_root:
            raise SearchInputError("missing --data-root; give the CIFAR batch directory or the ImageFolder root")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        ctx = init_distributed(cfg.device)
        try:
            return _search(cfg, state, ctx, lock if writer else None)
        finally:
            shutdown()
    finally:
        lock.release()


def _check_latency_options(cfg: SearchConfig) -> None:
    """Refuse a foreign or unreadable --latency-table, and a runtime the final measurement cannot use, early."""
    if not cfg.latency_table:
        return

    table = load_latency_table(cfg)
    if cfg.measure_latency:
        try:
            require_runtime(table.runtime)
        except UserError as exc:
            raise SearchInputError(f"{exc} (or pass --no-measure-latency to search with the table only)") from None


def measure_final_latency(cfg: SearchConfig, space: Any, genotype: Any, out: Path) -> dict[str, Any]:
    """Measure the final network end to end on the table's runtime, next to the table's prediction;
    written to ``latency.json`` and returned."""

    table = space.latency_table
    settings = table.conditions.get("measurement", {})
    threads = int(settings.get("threads") or 0)
    warmup, iters = max(10, int(settings.get("warmup", 10))), max(50, int(settings.get("iters", 50)))
    with PartTimer(table.runtime, threads=threads, warmup=warmup, iters=iters, rounds=int(settings.get("rounds", 5)),
                   exporter=settings.get("exporter") or "torchscript", clock=settings.get("clock") or "wall") as timer:
        measured = measure_genotype(genotype, table, timer)
    predicted = table.predict_ms(genotype)
    budget = latency_budget_ms(cfg) or None
    error = (table.correction or {}).get("after", {}).get("max_rel_error")
    report = {
        "format": "cdarts-search-latency", "version": 1, "runtime": table.runtime,
        "table": describe_table(table, cfg.latency_table),  # name, digest, conditions: never the machine's path
        "cpu": cpu_model(),
        "input_shape": [table.batch, 3, table.input_size, table.input_size], "threads": threads or None,
        "predicted_ms": round(predicted, 5), "measured_ms": round(measured, 5),
        "relative_error": round((predicted - measured) / measured, 5), "budget_ms": budget,
        "table_max_rel_error": error,
        "within_budget": None if budget is None else measured <= budget * (1 + (error or 0)),
        "within_budget_note": "measured <= budget * (1 + the table's max relative error on its validation children)",
        "statistic": f"median of {iters} runs after {warmup} warm-up runs",
        "clock": settings.get("clock") or "wall", "load": cpu_load(),
    }
    write_text(out / LATENCY_FILE, json.dumps(report, indent=2) + "\n")
    return report


def build_space(cfg: SearchConfig, num_classes: int, layout: str, input_size: int, device: torch.device) -> Any:
    """The search space object for ``cfg.space`` (see :mod:`search.space`)."""
    if cfg.space == "chain":
        return ChainSpace(cfg, num_classes, input_size, device)
    if cfg.space == "nb201":
        return Nb201Space(cfg, num_classes, input_size, device)

    return CellSpace(cfg, num_classes, layout, input_size, device)


def _search(cfg: SearchConfig, state: dict | None, ctx: DistContext, lock: RunLock | None) -> int:
    if state is not None and int(state.get("world_size", 1)) != ctx.world_size:
        raise SearchInputError(f"the checkpoint was written by {state['world_size']} processes, this run has "
                               f"{ctx.world_size}; resume with the same --nproc_per_node")
    data = build_search_data(cfg.dataset, cfg.data_root, train_portion=cfg.train_portion, subset=cfg.subset or None,
                             num_classes=cfg.num_classes or None, train_fraction=cfg.train_fraction,
                             val_fraction=cfg.val_fraction, input_size=cfg.input_size or None, seed=cfg.seed,
                             bad_images=cfg.bad_images)
    cfg = resolved_defaults(cfg, data.layout)
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    # the space refuses a budget outside its range: before the output folder or its lock exists
    space = build_space(cfg, data.num_classes, data.layout, data.input_size, ctx.device)
    if lock is not None and not lock.held:
        out.mkdir(parents=True, exist_ok=True)
        lock.acquire(out)
        prepare_out(cfg, {}, False)  # another run may have started here meanwhile
    search = CyclicSearch(cfg, space, data, ctx, out)
    if state is not None:
        search.load_state(state)
    elif ctx.is_main:
        write_text(out / RUN_FILE, json.dumps({"format": "cdarts-search-run", "version": 1,
                                               "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                               "config": dataclasses.asdict(cfg)}, indent=2) + "\n")
    ctx.barrier()
    genotype = search.run()
    if ctx.is_main:
        print(f"genotype: {out / 'genotype.json'}\n{genotype}")
        if getattr(space, "latency_table", None) is not None and cfg.measure_latency:
            r = measure_final_latency(cfg, space, genotype, out)
            budget = f", budget {r['budget_ms']:g} ms" if r["budget_ms"] else ""
            print(f"latency on {r['runtime']}: predicted {r['predicted_ms']:.3f} ms, "
                  f"measured {r['measured_ms']:.3f} ms ({r['relative_error']:+.1%}){budget}: {out / LATENCY_FILE}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv, interrupted=INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
