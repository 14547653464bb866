"""Ranges of the numeric options, checked before anything is built, allocated or written: an absurd width or
batch fails in one line instead of asking the allocator for more memory than the machine has."""

from __future__ import annotations

from typing import Any, Mapping

from cdarts_deploy.commands.args import UsageError
from cdarts_deploy.options import out_of_bounds

SEED = (0, 2**32 - 1)  # numpy's seed range
WIDTH = (1, 512)  # initial channels C of a cell network (the paper's are 16 to 48)
CELLS = (1, 64)
INPUT_SIDE = (8, 1024)
BATCH = (1, 65_536)
EPOCHS = (1, 100_000)
CLASSES = (1, 100_000)
FRACTION = (0, 1)

#: cdarts-train's recipe fields (``None``: the preset's value, checked once the preset filled it).
TRAIN: dict[str, tuple[float, float]] = {
    "width": WIDTH, "cells": CELLS, "input_size": INPUT_SIDE, "drop_path": FRACTION, "drop_rate": FRACTION,
    "aux_weight": (0, 1e3), "epochs": EPOCHS, "batch_size": BATCH, "lr": (0, 100), "lr_base_batch": (1, 1 << 20),
    "momentum": FRACTION, "rmsprop_decay": FRACTION, "opt_eps": (0, 1), "weight_decay": (0, 10),
    "warmup_epochs": (0, 100_000), "warmup_lr": (0, 100), "min_lr": (0, 100), "grad_clip": (0, 1e6),
    "label_smoothing": FRACTION, "cutout": (0, 1024), "mixup": (0, 100), "cutmix": (0, 100), "hflip": FRACTION,
    "color_jitter": (0, 10), "crop_pct": (0.01, 1), "workers": (0, 256), "ema_decay": FRACTION, "seed": SEED,
}

#: cdarts-export's numeric options.
EXPORT: dict[str, tuple[float, float]] = {
    "width": WIDTH, "cells": CELLS, "num_classes": CLASSES, "opset": (7, 30), "batch_size": (1, 4096),
    "latency_iters": (0, 100_000), "max_batch": (1, 4096), "workspace_mb": (1, 1 << 20),
}


def check_bounds(values: Mapping[str, Any], bounds: Mapping[str, tuple[float, float]]) -> None:
    """Each ``values[name]`` given (not None) inside ``bounds[name]``, inclusive; NaN and infinity never are."""
    problem = out_of_bounds(values, bounds)
    if problem:
        raise UsageError(problem)
