"""``cdarts-search``: the CDARTS search command (single process, or data-parallel under torchrun).

    cdarts-search --dataset cifar10 --data-root DATA/cifar-10-batches-py --out runs/c10
    cdarts-search --dataset imagefolder --data-root DATA/imagenet --out runs/in --warmup-epochs 10
    torchrun --nproc_per_node=2 -m search.cli --preset cpu-smoke --dataset cifar10 ...
    cdarts-search --out runs/c10 --resume          # continue a run after an interruption
    cdarts-search --space chain --preset smoke32 --dataset cifar10 --data-root DATA/... --out runs/chain

User errors (bad options, data, output folder or checkpoint) are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from cdarts_deploy import bounded_json
from cdarts_deploy.atomic_files import write_text
from cdarts_deploy.commands.args import OneLineParser, run_main

from .checkpoint import load_checkpoint
from .config import PRESETS, RUNTIME_ONLY, SearchConfig, apply_overrides, config_fields, read_config_file, \
    resolved_defaults
from .data import DATASETS, build_search_data, make_loader
from .distributed import DistContext, barrier, init_distributed, shutdown
from .errors import SearchInputError

PROG = "cdarts-search"
INTERRUPTED = "interrupted; continue with --resume"
RUN_FILE = "run.json"
RUN_FILES = (RUN_FILE, "checkpoint.pt", "genotype.json", "log.jsonl", "cells.png")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description="Cyclic Differentiable Architecture Search (CDARTS) in the DARTS cell space. "
        "Defaults are the paper's CIFAR settings (Table 1).",
        argument_default=argparse.SUPPRESS,  # so that only options actually given override presets and configs
    )
    p.add_argument("--preset", choices=sorted(PRESETS), help="a bundle of settings: paper (Table 1 CIFAR, the defaults), paper-imagenet, cpu-smoke, tiny")
    p.add_argument("--config", help="JSON file of option values (names as on the command line)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    for f in config_fields():
        flag = "--" + f.name.replace("_", "-")
        kw: dict[str, Any] = {"help": f"{f.metadata['help']} (default: {f.default!r})"}
        if isinstance(f.default, bool):
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = type(f.default)
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
    merged = apply_overrides(dataclasses.asdict(SearchConfig()), explicit, "options")
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
    for key, value in explicit.items():
        if key not in RUNTIME_ONLY and getattr(stored_cfg, key) != value:
            raise SearchInputError(f"--out {out}: holds a run with --{key.replace('_', '-')} "
                                   f"{getattr(stored_cfg, key)!r}, not {value!r}; resume with the run's own options "
                                   "or choose another --out")
    runtime = {k: v for k, v in explicit.items() if k in RUNTIME_ONLY}
    cfg = dataclasses.replace(stored_cfg, **dict(runtime, out=str(out)))
    state = load_checkpoint(out / "checkpoint.pt")
    if _comparable(state.get("config", {})) != _comparable(dataclasses.asdict(stored_cfg)):
        raise SearchInputError(f"{out / 'checkpoint.pt'}: belongs to a different run than {run_path}; "
                               "restore the matching pair or start a new --out")
    return cfg, state


def run(args: argparse.Namespace) -> int:
    cfg, explicit = resolve_config(args)
    resume = bool(getattr(args, "resume", False))
    if not cfg.out:
        raise SearchInputError("missing --out; give the directory for genotype.json, logs and checkpoints")
    cfg, state = prepare_out(cfg, explicit, resume)
    if cfg.space == "chain":
        raise SearchInputError("--space chain: give it on the command line (the chain search has its own "
                               "options); a --config file cannot switch spaces")
    if not cfg.data_root:
        raise SearchInputError("missing --data-root; give the CIFAR batch directory or the ImageFolder root")
    if cfg.epochs < 1 or cfg.warmup_epochs < 0 or cfg.update_epochs < 1 or cfg.batch_size < 1:
        raise SearchInputError("--epochs, --update-epochs and --batch-size must be >= 1 and --warmup-epochs >= 0")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ctx = init_distributed(cfg.device)
    try:
        return _search(cfg, state, ctx)
    finally:
        shutdown(ctx)


def _search(cfg: SearchConfig, state: dict | None, ctx: DistContext) -> int:
    from .cell_space import CellSpace
    from .trainer import CyclicSearch

    if state is not None and int(state.get("world_size", 1)) != ctx.world_size:
        raise SearchInputError(f"the checkpoint was written by {state['world_size']} processes, this run has "
                               f"{ctx.world_size}; resume with the same --nproc_per_node")
    data = build_search_data(cfg.dataset, cfg.data_root, train_portion=cfg.train_portion, subset=cfg.subset or None,
                             num_classes=cfg.num_classes or None, train_fraction=cfg.train_fraction,
                             val_fraction=cfg.val_fraction, input_size=cfg.input_size or None, seed=cfg.seed)
    cfg = resolved_defaults(cfg, data.layout)
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    space = CellSpace(cfg, data.num_classes, data.layout, data.input_size, ctx.device)
    search = CyclicSearch(cfg, space, data, ctx, out)
    if state is not None:
        search.load_state(state)
    elif ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        stored = {k: v for k, v in dataclasses.asdict(cfg).items()}
        write_text(out / RUN_FILE, json.dumps({"format": "cdarts-search-run", "version": 1,
                                                       "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                       "config": stored}, indent=2) + "\n")
    barrier(ctx)
    genotype = search.run()
    if ctx.is_main:
        print(f"genotype: {out / 'genotype.json'}\n{genotype}")
    return 0


# ----- the chain-structured space (paper Section 4.6.1): its own options ----------------------------------


def build_chain_parser() -> argparse.ArgumentParser:
    from .chain_search import PRESETS as CHAIN_PRESETS, ChainSearchConfig

    p = OneLineParser(prog=f"{PROG} --space chain",
                      description="CDARTS search in the chain-structured MBConv space (CDARTS-a/b family).")
    p.add_argument("--dataset", default="imagefolder", choices=DATASETS)
    p.add_argument("--data-root", required=True, help="CIFAR python-batch folder or ImageFolder tree <root>/<class>/<image>")
    p.add_argument("--out", required=True, help="output folder (genotype.json, log.jsonl, checkpoint.pt)")
    p.add_argument("--preset", choices=sorted(CHAIN_PRESETS), help="small CPU smoke-run settings (options override them)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--budget", type=float, dest="budget_madds", help="target multiply-adds, e.g. 300e6")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    defaults = ChainSearchConfig()
    for f in dataclasses.fields(ChainSearchConfig):
        if f.name in ("budget_madds", "extra"):
            continue
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        if isinstance(value, tuple):
            p.add_argument(flag, type=float, nargs=len(value), default=None, help=f"default {value}")
        else:
            p.add_argument(flag, type=type(value), default=None, help=f"default {value}")
    p.add_argument("--space", default="chain", choices=["chain"], help="search space (this command: chain)")
    return p


def chain_config_from_args(args: argparse.Namespace):
    """Preset values, then the options given; checked by ``chain_search.check_config``."""
    from .chain_search import PRESETS as CHAIN_PRESETS, ChainSearchConfig, check_config

    values: dict[str, Any] = dict(CHAIN_PRESETS.get(args.preset, {})) if args.preset else {}
    for f in dataclasses.fields(ChainSearchConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = tuple(v) if isinstance(v, list) else v
    return check_config(ChainSearchConfig(**values))


def _check_chain_out(out: Path, resume: bool) -> None:
    if resume:
        return
    taken = [n for n in ("checkpoint.pt", "genotype.json", "log.jsonl") if (out / n).exists()]
    if taken:
        raise SearchInputError(
            f"{out} already holds a search run ({', '.join(taken)}); pass --resume to continue it or choose a new --out"
        )


def run_chain(args: argparse.Namespace) -> int:
    from cdarts_deploy.genotype import dumps

    from .chain_search import run_search

    cfg = chain_config_from_args(args)
    out = Path(args.out)
    _check_chain_out(out, args.resume)
    ctx = init_distributed(args.device)
    try:
        data = build_search_data(args.dataset, args.data_root, train_fraction=cfg.train_fraction,
                                 val_fraction=cfg.val_fraction, input_size=cfg.input_size, seed=cfg.seed)
        train_loader = make_loader(data.train, cfg.batch_size, ctx, cfg.seed, cfg.workers)
        val_loader = make_loader(data.val, cfg.batch_size, ctx, cfg.seed + 1, cfg.workers)
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
        genotype = run_search(cfg, train_loader, val_loader, data.num_classes, out, ctx, args.resume)
    finally:
        shutdown(ctx)
    if ctx.is_main:
        print(dumps(genotype))
    return 0


# ----- entry point ------------------------------------------------------------------------------------------


def wants_chain_space(argv: Sequence[str]) -> bool:
    """Whether the command line asks for the chain space, whose options differ from the cell space's."""
    return "--space=chain" in argv or any(a == "--space" and b == "chain" for a, b in zip(argv, argv[1:]))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if wants_chain_space(args):
        return run_main(PROG, build_chain_parser(), run_chain, args, interrupted=INTERRUPTED)
    return run_main(PROG, build_parser(), run, args, interrupted=INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
