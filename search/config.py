"""Every option of ``cdarts-search`` with the paper's values (Table 1, CIFAR row) as defaults, plus presets.

Precedence: defaults < ``--preset`` < ``--config FILE`` (a JSON object of option
names) < options given on the command line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cdarts_deploy import bounded_json
from cdarts_deploy.genotype import LAYOUT_DEFAULTS

from .errors import SearchInputError
from .regularization import default_decay_epochs


_C, _I = LAYOUT_DEFAULTS["cifar"], LAYOUT_DEFAULTS["imagenet"]  # for the help texts


def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class SearchConfig:
    # what to search on
    dataset: str = _opt("cifar10", "cifar10, cifar100 or imagefolder", choices=("cifar10", "cifar100", "imagefolder"))
    data_root: str = _opt("", "CIFAR python batch directory, or ImageFolder root")
    out: str = _opt("", "output directory (genotype.json, log.jsonl, cells.png, checkpoint.pt)")
    space: str = _opt("cell", "search space: cell (DARTS cells) or chain (MBConv; plug-in)", choices=("cell", "chain"))
    method: str = _opt("cdarts", "cdarts (cyclic, Algorithm 1) or darts (first-order DARTS baseline)",
                       choices=("cdarts", "darts"))
    seed: int = _opt(0, "random seed (same seed, same result on CPU)")
    # schedule (Algorithm 1, Table 1)
    epochs: int = _opt(30, "search epochs S_S (after the warm-up)")
    warmup_epochs: int = _opt(2, "epochs training only w_S before alpha moves (10 on ImageNet)")
    eval_epochs: float = _opt(1.0, "S_E: epochs of w_E training on val after each rebuild (may be fractional)")
    update_epochs: int = _opt(1, "S_U: rebuild the evaluation network every this many epochs")
    batch_size: int = _opt(64, "batch size per process")
    lr: float = _opt(0.1, "SGD learning rate of w_S and w_E (cosine-annealed)")
    lr_min: float = _opt(0.001, "final learning rate of the cosine schedule")
    momentum: float = _opt(0.9, "SGD momentum")
    weight_decay: float = _opt(3e-4, "SGD weight decay")
    grad_clip: float = _opt(5.0, "gradient-norm clipping of w_S and w_E")
    arch_lr: float = _opt(3e-4, "Adam learning rate of alpha")
    arch_beta1: float = _opt(0.5, "Adam beta1 of alpha")
    arch_beta2: float = _opt(0.999, "Adam beta2 of alpha")
    arch_weight_decay: float = _opt(3e-4, "Adam weight decay of alpha")
    # distillation (Eq. 9-10) and regularization (Eq. 11)
    distill_lambda: float = _opt(4.0, "lambda: weight of the introspective distillation loss")
    distill_temperature: float = _opt(2.0, "T of the soft targets")
    distill_loss: str = _opt("kl", "kl (paper) or the reference's cosine, mse, smooth_l1",
                             choices=("kl", "cosine", "mse", "smooth_l1"))
    detach_teacher: bool = _opt(False, "stop the distillation gradient at the evaluation network (paper: it flows)")
    head_ce_weight: float = _opt(1.0, "cross-entropy weight of the evaluation network's embedding heads")
    reg_lambda: float = _opt(5.0, "lambda': start value of the L1 skip regularization (0 switches it off)")
    reg_decay_epochs: int = _opt(0, "epochs over which lambda' decays to 0 (0: two thirds of --epochs)")
    reg_ops: str = _opt("skip_connect", "comma-separated operations whose alpha is L1-penalised "
                        "(reference: skip_connect,max_pool_3x3,avg_pool_3x3)")
    # networks
    width: int = _opt(16, "search network width C")
    cells: int = _opt(8, "search network cells")
    eval_width: int = _opt(0, "evaluation network width during search (0: same as --width)")
    eval_cells: int = _opt(0, f"evaluation network cells (0: {_C['cells']} for CIFAR, "
                           f"{_I['cells']} for ImageNet layouts)")
    share_stem: bool = _opt(True, "the evaluation network shares the search network's stem (equal widths only)")
    per_stage_alpha: bool = _opt(False, "one alpha per network stage (3-stage genotype)")
    learn_beta: bool = _opt(False, "learn per-node edge weights beta")
    export_width: int = _opt(0, f"network hint written into genotype.json "
                             f"(0: {_C['width']} CIFAR, {_I['width']} ImageNet)")
    export_cells: int = _opt(0, f"network hint written into genotype.json "
                             f"(0: {_C['cells']} CIFAR, {_I['cells']} ImageNet)")
    # data
    train_portion: float = _opt(0.5, "CIFAR: fraction of the training set used as train (the rest is val)")
    subset: int = _opt(0, "CIFAR: use only the first N training images (0: all)")
    num_classes: int = _opt(0, "ImageFolder: use the first N classes (0: all)")
    train_fraction: float = _opt(0.1, "ImageFolder: fraction of each class for train")
    val_fraction: float = _opt(0.1, "ImageFolder: another fraction of each class for val")
    input_size: int = _opt(0, f"input resolution (0: {_C['input_size']} for CIFAR, {_I['input_size']} for ImageFolder)")
    # running
    workers: int = _opt(0, "data-loader worker processes")
    device: str = _opt("auto", "auto, cpu or cuda", choices=("auto", "cpu", "cuda"))
    threads: int = _opt(0, "torch CPU threads per process (0: leave torch's default)")
    max_steps: int = _opt(0, "cap on steps per epoch (0: a full pass; for smoke runs and benchmarks)")
    progress: bool = _opt(True, "show progress bars")


#: Options that may differ between the run that wrote a checkpoint and the one resuming it.
RUNTIME_ONLY = {"workers", "device", "threads", "progress", "out", "data_root"}

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # Table 1's ImageNet row: 8 GPUs x 128, 10 epochs of w_S pre-training with alpha fixed, S_E = 3 epochs.
    "paper-imagenet": dict(batch_size=128, lr=0.8, weight_decay=3e-5, arch_weight_decay=3e-5, warmup_epochs=10,
                           eval_epochs=3.0, input_size=224),
    # A few minutes on a laptop CPU: a real but small search on a CIFAR subset.
    "cpu-smoke": dict(width=8, cells=5, eval_cells=8, batch_size=16, epochs=3, warmup_epochs=1, subset=1024,
                      max_steps=20, threads=0),
    # Seconds: for tests and checking that everything runs.
    "tiny": dict(width=4, cells=3, eval_cells=3, batch_size=8, epochs=2, warmup_epochs=1, subset=128,
                 max_steps=2, input_size=16, export_width=8, export_cells=5),
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
    network = LAYOUT_DEFAULTS[layout]  # the evaluation network of the paper for this layout
    return dataclasses.replace(
        cfg,
        eval_width=cfg.eval_width or cfg.width,
        eval_cells=cfg.eval_cells or network["cells"],
        export_width=cfg.export_width or network["width"],
        export_cells=cfg.export_cells or network["cells"],
        reg_decay_epochs=cfg.reg_decay_epochs or default_decay_epochs(cfg.epochs),
    )
