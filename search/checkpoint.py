"""Search checkpoints: written atomically, read with ``weights_only=True``, plus RNG state capture.

Everything stored is a tensor, a number, a string or a container of those, so the
safe loader accepts it; numpy's RNG state is converted to a tensor for that reason.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backbones.checkpoint_io import CheckpointError, read_checkpoint
from cdarts_deploy.atomic_files import write_with

from .errors import SearchInputError


def capture_rng() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Replace ``path`` with ``state`` atomically: an interrupted save leaves the previous checkpoint."""
    write_with(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A search checkpoint read safely; a missing, unreadable or foreign file is a :class:`SearchInputError`."""
    path = Path(path)
    if not path.is_file():
        raise SearchInputError(f"{path}: no checkpoint to resume from; run without --resume to start a new search")
    try:
        state = read_checkpoint(path, what="search checkpoint")
    except CheckpointError as exc:
        # Keep the reader's reason but not its advice to re-save weights: a resume file is
        # replaced or deleted, never re-saved by hand.
        text = str(exc)
        reason = text.partition("cannot be loaded safely: ")[2].partition("; ")[0] or text
        raise SearchInputError(
            f"{path}: corrupt or unreadable checkpoint ({reason}); delete it to start over or restore a good copy"
        ) from None
    if not isinstance(state, dict) or "epoch" not in state or "format" not in state:
        raise SearchInputError(f"{path}: not a cdarts-search checkpoint; "
                               "point --out at the folder of the run to resume")
    return state
