"""Every option of ``cdarts-search`` with the paper's values (Table 1, CIFAR row) as defaults, plus presets.

One set of options for every search space (``--space cell|chain|nb201``).  Precedence:
defaults < the space's defaults (``SPACE_DEFAULTS``) < ``--preset`` < ``--config FILE``
(a JSON object of option names) < options given on the command line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cdarts_deploy import bounded_json
from cdarts_deploy.data.image_files import BAD_IMAGE_POLICIES, BAD_IMAGES_HELP
from cdarts_deploy.errors import UserError
from cdarts_deploy.genotype import LAYOUT_DEFAULTS, NB201_DEFAULTS
from cdarts_deploy.latency_table_format import RUNTIMES, parse_duration_ms
from cdarts_deploy.nats_bench import BenchmarkError, open_benchmark
from cdarts_deploy.options import option, out_of_bounds

from .errors import SearchInputError
from .regularization import default_decay_epochs

_C, _I = LAYOUT_DEFAULTS["cifar"], LAYOUT_DEFAULTS["imagenet"]  # for the help texts




@dataclass
class SearchConfig:
    # what to search on
    dataset: str = option("cifar10", "cifar10, cifar100 or imagefolder", choices=("cifar10", "cifar100", "imagefolder"))
    data_root: str = option("", "CIFAR python batch directory, or ImageFolder root")
    out: str = option("", "output directory (genotype.json, log.jsonl, cells.png, checkpoint.pt)")
    space: str = option("cell", "search space: cell (DARTS cells, paper Sec. 3.3), chain (MBConv blocks, "
                      "paper Sec. 4.6.1) or nb201 (NAS-Bench-201 cell, paper Sec. 4.2)",
                      choices=("cell", "chain", "nb201"))
    method: str = option("cdarts", "cdarts (cyclic, Algorithm 1) or darts (first-order DARTS baseline)",
                       choices=("cdarts", "darts"))
    seed: int = option(0, "random seed (same seed, same result on CPU)")
    # schedule (Algorithm 1, Table 1)
    epochs: int = option(30, "search epochs S_S, counted after the warm-up epochs")
    warmup_epochs: int = option(2, "epochs training only w_S before alpha moves (10 on ImageNet); added to --epochs")
    eval_epochs: float = option(1.0, "S_E: epochs of w_E training on val after each rebuild (may be fractional)")
    eval_steps: int = option(0, "S_E in steps instead of epochs (0: use --eval-epochs)")
    update_epochs: int = option(1, "S_U: rebuild the evaluation network every this many epochs")
    batch_size: int = option(64, "batch size per process")
    lr: float = option(0.1, "SGD learning rate of w_S and w_E (cosine-annealed per epoch; chain space: 0.5)")
    lr_min: float = option(0.001, "final learning rate of the cosine schedule")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(3e-4, "SGD weight decay (chain space: 4e-5)")
    grad_clip: float = option(5.0, "gradient-norm clipping of w_S, w_E and alpha (each group separately; 0: off)")
    arch_lr: float = option(3e-4, "Adam learning rate of alpha")
    arch_beta1: float = option(0.5, "Adam beta1 of alpha")
    arch_beta2: float = option(0.999, "Adam beta2 of alpha")
    arch_weight_decay: float = option(3e-4, "Adam weight decay of alpha")
    alpha_init_std: float = option(1e-3, "standard deviation of the initial alpha (chain space)")
    # distillation (Eq. 9-10) and regularization (Eq. 11)
    distill_lambda: float = option(4.0, "lambda: weight of the introspective distillation loss")
    distill_temperature: float = option(2.0, "T of the soft targets")
    distill_loss: str = option("kl", "kl (paper) or the reference's cosine, mse, smooth_l1",
                             choices=("kl", "cosine", "mse", "smooth_l1"))
    level_weights: str = option("", "comma-separated fixed weight per distillation level, one per network stage "
                              "from the first (empty: uniform; paper Eq. 10 sums the levels)")
    detach_teacher: bool = option(False, "stop the distillation gradient at the evaluation network (paper: it flows)")
    head_ce_weight: float = option(0.0, "cross-entropy weight of the embedding heads on the evaluation network's "
                                 "stage features (0: the heads stay fixed random projections, as in the paper's "
                                 "reference code with fixed heads; the distillation never trains them)")
    head_mid: int = option(128, "embedding heads: width of the 1x1 conv")
    head_embed: int = option(768, "embedding heads: width of the 2x2 conv")
    reg_lambda: float = option(5.0, "lambda': start value of the L1 skip regularization (0 switches it off)")
    reg_decay_epochs: int = option(0, "epochs over which lambda' decays to 0 (0: two thirds of --epochs)")
    reg_ops: str = option("skip_connect", "cell space: comma-separated operations whose alpha is L1-penalised "
                        "(reference: skip_connect,max_pool_3x3,avg_pool_3x3)")
    budget: float = option(0.0, "chain space: target multiply-adds of the derived network for one image, e.g. 300e6 "
                         "(0: no cost term)")
    budget_weight: float = option(1.0, "chain space: weight of the expected-cost penalty in the joint step")
    budget_tolerance: float = option(0.1, "chain space: relative tolerance of the derived network's cost")
    latency_table: str = option("", "chain space: latency table (cdarts-latency-table) of the deployment runtime; "
                              "the derived network's predicted latency is logged every epoch")
    latency_budget: str = option("", "chain space: latency limit of the derived network on the table's runtime, "
                               "e.g. 12ms: its predicted latency lands in budget x (1 - --budget-tolerance) .. "
                               "budget (needs --latency-table; replaces --budget)")
    latency_runtime: str = option("onnxruntime-cpu", "chain space: runtime the --latency-table must have been "
                                "measured on", choices=RUNTIMES)
    measure_latency: bool = option(True, "chain space with --latency-table: measure the final network's latency on "
                                 "the table's runtime after the search (latency.json)")
    # networks (cell space)
    width: int = option(16, "search network width C")
    cells: int = option(8, "search network cells")
    eval_width: int = option(0, "evaluation network width during search (0: same as --width)")
    eval_cells: int = option(0, f"evaluation network cells (0: {_C['cells']} for CIFAR, "
                           f"{_I['cells']} for ImageNet layouts)")
    share_stem: bool = option(True, "the evaluation network shares the search network's stem (equal widths only)")
    per_stage_alpha: bool = option(False, "one alpha per network stage (3-stage genotype)")
    learn_beta: bool = option(False, "learn per-node edge weights beta")
    export_width: int = option(0, f"network hint written into genotype.json "
                             f"(0: {_C['width']} CIFAR, {_I['width']} ImageNet)")
    export_cells: int = option(0, f"network hint written into genotype.json "
                             f"(0: {_C['cells']} CIFAR, {_I['cells']} ImageNet)")
    # networks (chain space)
    base: str = option("cdarts_b_base", "chain space: base architecture: cdarts_a_base, cdarts_b_base, tiny, "
                     "or a JSON file of arch-string stages")
    stem_channels: int = option(16, "chain space: stem width")
    head_channels: int = option(1280, "chain space: width of the 1x1 conv before the classifier")
    # NAS-Bench-201 space
    benchmark: str = option("", "nb201 space: NATS-Bench topology folder (simple layout); logs the derived "
                          "architecture's benchmark accuracy every epoch and draws benchmark.png")
    # data
    train_portion: float = option(0.5, "CIFAR: fraction of the training set used as train (the rest is val)")
    subset: int = option(0, "CIFAR: use only the first N training images (0: all)")
    num_classes: int = option(0, "ImageFolder: use the first N classes (0: all)")
    train_fraction: float = option(0.1, "ImageFolder: fraction of each class for train")
    val_fraction: float = option(0.1, "ImageFolder: another fraction of each class for val")
    bad_images: str = option("fail", BAD_IMAGES_HELP, choices=BAD_IMAGE_POLICIES)
    input_size: int = option(
        0, f"input resolution (0: {_C['input_size']} for CIFAR, {_I['input_size']} for ImageFolder)")
    # running
    workers: int = option(0, "data-loader worker processes")
    device: str = option("auto", "auto, cpu or cuda", choices=("auto", "cpu", "cuda"))
    threads: int = option(0, "torch CPU threads per process (0: leave torch's default)")
    channels_last: bool = option(True, "run both networks in channels-last memory order (oneDNN's faster "
                                       "depthwise kernels on CPU; results differ from contiguous order by rounding)")
    max_steps: int = option(0, "cap on steps per epoch (0: a full pass; for smoke runs and benchmarks)")
    progress: bool = option(True, "show progress bars")


#: Options that may differ between the run that wrote a checkpoint and the one resuming it.
RUNTIME_ONLY = {"workers", "device", "threads", "progress", "out", "data_root", "measure_latency", "benchmark",
                "bad_images"}  # bad_images: with "fail" a run with a bad file never started

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # Table 1's ImageNet row: 8 GPUs x 128, 10 epochs of w_S pre-training with alpha fixed, S_E = 3 epochs.
    "paper-imagenet": dict(batch_size=128, lr=0.8, weight_decay=3e-5, arch_weight_decay=3e-5, warmup_epochs=10,
                           eval_epochs=3.0, input_size=224),
    # A few minutes on a laptop CPU: a real but small search on a CIFAR subset.
    "cpu-smoke": dict(width=8, cells=5, eval_cells=8, batch_size=16, epochs=3, warmup_epochs=1, subset=1024,
                      max_steps=20, threads=0),
    # Seconds: for tests and checking that everything runs.
    "tiny": dict(width=4, cells=3, eval_cells=5, batch_size=8, epochs=2, warmup_epochs=1, subset=128,
                 max_steps=2, input_size=16, export_width=8, export_cells=5, head_mid=16, head_embed=32),
    # Chain space, CPU smoke runs: a 4-block base at 32x32 (or CDARTS-a's base at 64x64), small heads.
    "smoke32": dict(space="chain", base="tiny", input_size=32, stem_channels=8, head_channels=128, epochs=2,
                    warmup_epochs=1, batch_size=8, lr=0.05, arch_lr=0.05, eval_steps=2, head_mid=16, head_embed=32),
    "smoke64": dict(space="chain", base="cdarts_a_base", input_size=64, epochs=2, warmup_epochs=0, batch_size=8,
                    lr=0.05, arch_lr=0.05, eval_steps=2),
}

#: Defaults that differ by space, applied before presets (chain: the reference's ImageNet chain settings).
SPACE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cell": {},
    "chain": dict(dataset="imagefolder", lr=0.5, weight_decay=4e-5, train_fraction=0.5, val_fraction=0.5),
    # Table 1's NAS-Bench-201 row: 50 search epochs, no skip-connect L1 term; the benchmark's C=16, N=5 networks.
    "nb201": dict(epochs=50, reg_lambda=0.0, width=16, cells=5),
}


def config_fields() -> list[dataclasses.Field]:
    return list(fields(SearchConfig))


def apply_overrides(base: dict[str, Any], overrides: dict[str, Any], source: str) -> dict[str, Any]:
    """Merge ``overrides`` into ``base`` after checking names and types."""
    known = {f.name: f for f in config_fields()}
    out = dict(base)
    for key, value in overrides.items():
        name = key.replace("-", "_")
        if name not in known:
            raise SearchInputError(f"{source}: unknown option {key!r}; see cdarts-search --help for the names")
        expected = type(known[name].default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise SearchInputError(f"{source}: option {key!r} is {value!r}, expected a {expected.__name__}")
        out[name] = value
    return out


def read_config_file(path: str) -> dict[str, Any]:
    """The options in a ``--config`` JSON file (bounded: size, nesting, unique keys, finite numbers)."""
    if not Path(path).is_file():
        raise SearchInputError(f"{path}: config file not found; pass an existing JSON file to --config")
    try:
        doc = bounded_json.load(path, expected="a JSON object of option names")
    except bounded_json.JSONInputError as exc:
        raise SearchInputError(f"{exc}; write a JSON object of options") from None
    if not isinstance(doc, dict):
        raise SearchInputError(f"{path}: found a JSON {type(doc).__name__}, expected an object of option names")
    return doc


def resolved_defaults(cfg: SearchConfig, layout: str) -> SearchConfig:
    """Fill the 0 = 'depends on the data' options."""
    # the evaluation network of the paper for this layout, or the benchmark's network (C=16, N=5)
    network = NB201_DEFAULTS if cfg.space == "nb201" else LAYOUT_DEFAULTS[layout]
    return dataclasses.replace(
        cfg,
        eval_width=cfg.eval_width or cfg.width,
        eval_cells=cfg.eval_cells or network["cells"],
        export_width=cfg.export_width or network["width"],
        export_cells=cfg.export_cells or network["cells"],
        reg_decay_epochs=cfg.reg_decay_epochs or default_decay_epochs(cfg.epochs),
    )


def level_weights(cfg: SearchConfig, levels: int) -> list[float] | None:
    """The fixed distillation level weights of ``--level-weights`` (None: uniform)."""
    text = cfg.level_weights.strip()
    if not text:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise SearchInputError(f"--level-weights {text!r}: expected comma-separated numbers") from None
    if len(values) != levels or any(not v >= 0 for v in values) or sum(values) <= 0:
        raise SearchInputError(f"--level-weights {text!r}: expected {levels} non-negative numbers (one per network "
                               "stage), not all zero")
    return values


def latency_budget_ms(cfg: SearchConfig) -> float:
    """``--latency-budget`` in milliseconds (0: none)."""
    if not cfg.latency_budget:
        return 0.0
    try:
        return parse_duration_ms(cfg.latency_budget)
    except UserError as exc:
        raise SearchInputError(str(exc)) from None


def check_benchmark(cfg: SearchConfig) -> None:
    """``--benchmark`` names a simple-layout folder and goes with ``--space nb201`` (checked before any output)."""
    if cfg.space != "nb201":
        raise SearchInputError("--benchmark: the NAS-Bench-201 benchmark scores the nb201 space; add --space nb201")
    try:
        open_benchmark(cfg.benchmark)
    except BenchmarkError as exc:
        raise SearchInputError(f"--benchmark {exc}") from None


#: Inclusive range of each numeric option, checked before anything is built or allocated: a width of 10**5 or
#: a batch of 10**9 would ask for more memory than any machine has instead of failing in one line.
BOUNDS: dict[str, tuple[float, float]] = {
    "seed": (0, 2**32 - 1), "epochs": (1, 100_000), "warmup_epochs": (0, 100_000), "eval_epochs": (0, 1_000),
    "eval_steps": (0, 10**9), "update_epochs": (1, 100_000), "batch_size": (1, 65_536), "lr": (0, 100),
    "lr_min": (0, 100), "momentum": (0, 1), "weight_decay": (0, 10), "grad_clip": (0, 1e6), "arch_lr": (0, 100),
    "arch_beta1": (0, 1), "arch_beta2": (0, 1), "arch_weight_decay": (0, 10), "alpha_init_std": (0, 100),
    "distill_lambda": (0, 1e6), "distill_temperature": (1e-3, 1e3), "head_ce_weight": (0, 1e6),
    "head_mid": (1, 8192), "head_embed": (1, 8192), "reg_lambda": (0, 1e6), "reg_decay_epochs": (0, 100_000),
    "budget": (0, 1e15), "budget_weight": (0, 1e6), "budget_tolerance": (0, 100), "width": (1, 512),
    "cells": (1, 64), "eval_width": (0, 512), "eval_cells": (0, 64), "export_width": (0, 1024),
    "export_cells": (0, 64), "stem_channels": (1, 1024), "head_channels": (1, 8192), "train_portion": (0, 1),
    "subset": (0, 10**9), "num_classes": (0, 100_000), "train_fraction": (0, 1), "val_fraction": (0, 1),
    "input_size": (0, 1024), "workers": (0, 256), "threads": (0, 1024), "max_steps": (0, 10**9),
}


def check_bounds(cfg: SearchConfig) -> None:
    """Every numeric option inside :data:`BOUNDS` (NaN and infinity never are)."""
    problem = out_of_bounds({name: getattr(cfg, name) for name in BOUNDS}, BOUNDS)
    if problem:
        raise SearchInputError(problem)


def check_config(cfg: SearchConfig) -> SearchConfig:
    """``cfg`` if its values can run; otherwise a one-line :class:`SearchInputError` naming the option."""
    check_bounds(cfg)
    if cfg.epochs < 1 or cfg.warmup_epochs < 0 or cfg.update_epochs < 1 or cfg.batch_size < 1:
        raise SearchInputError("--epochs, --update-epochs and --batch-size must be >= 1 and --warmup-epochs >= 0")
    if cfg.eval_steps < 0 or cfg.eval_epochs < 0 or cfg.max_steps < 0:
        raise SearchInputError("--eval-steps, --eval-epochs and --max-steps must be >= 0")
    if cfg.budget < 0 or cfg.budget_weight < 0 or cfg.budget_tolerance < 0:
        raise SearchInputError("--budget, --budget-weight and --budget-tolerance must be >= 0 "
                               "(--budget is multiply-adds, e.g. 300e6)")
    if cfg.budget and cfg.space != "chain":
        raise SearchInputError("--budget: a multiply-add budget is a term of the chain space; add --space chain")
    if (cfg.latency_table or cfg.latency_budget) and cfg.space != "chain":
        raise SearchInputError("--latency-table/--latency-budget: latency is a term of the chain space; "
                               "add --space chain")
    if cfg.benchmark:
        check_benchmark(cfg)
    if cfg.space == "nb201" and (cfg.per_stage_alpha or cfg.learn_beta):
        raise SearchInputError("--per-stage-alpha/--learn-beta: the nb201 space has one alpha shared by all cells; "
                               "drop them")
    if cfg.latency_budget:
        if not cfg.latency_table:
            raise SearchInputError(f"--latency-budget {cfg.latency_budget}: needs --latency-table FILE (measure one "
                                   "with cdarts-latency-table)")
        if cfg.budget:
            raise SearchInputError("--budget and --latency-budget: give one budget (multiply-adds or latency)")
        latency_budget_ms(cfg)
    if cfg.head_mid < 1 or cfg.head_embed < 1:
        raise SearchInputError("--head-mid and --head-embed must be >= 1")
    if cfg.input_size and cfg.input_size < 8:
        raise SearchInputError(f"--input-size {cfg.input_size}: must be at least 8 (or 0 for the data's default)")
    return cfg
