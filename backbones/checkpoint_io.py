"""The one safe checkpoint reader: ``torch.load(weights_only=True)`` and one-line errors.

Every command and library part that reads a ``.pth`` file goes through here, so a file
holding pickled objects is refused the same way everywhere, and torch's advice to retry
with ``weights_only=False`` (exactly what must not be done with a stranger's file) is
never repeated to the user.  ``.safetensors`` files (no pickle at all) are read too, and a
state_dict holding NaN or infinite values is refused with the tensor's name: such weights
score or export as garbage that would be blamed on something else.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from cdarts_deploy.errors import UserError

# Where training frameworks nest the weights: timm (state_dict_ema, state_dict), mmengine
# (state_dict), plain dicts (model).  EMA weights first: they are the ones timm evaluates.
NESTED_STATE_KEYS: tuple[str, ...] = ("state_dict_ema", "model_ema", "state_dict", "model")


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, unsafe or does not fit the model."""


def is_safetensors(path: str | os.PathLike) -> bool:
    """The safetensors layout: an 8-byte little-endian header length, then a JSON object."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
            size = os.fstat(fh.fileno()).st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 0 < struct.unpack("<Q", head[:8])[0] <= size - 8


def _read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{what} {path} is a damaged safetensors file ({first[:120]}); "
                              "save it again with safetensors.torch.save_file") from None


def read_checkpoint(path: str | os.PathLike, *, what: str = "checkpoint") -> Any:
    """The object stored at ``path``, loaded on the CPU with ``weights_only=True`` (or a safetensors file's
    tensors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} not found; pass the path of a file saved with torch.save")
    if is_safetensors(path):
        return _read_safetensors(path, what)
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of files it is about to refuse anyway
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or unsafe archives
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it holds pickled Python objects, not only tensors"
        else:
            reason = f"it is damaged or not a torch file ({first[:120]})"
        raise CheckpointError(
            f"{what} {path} cannot be loaded safely: {reason}; save it with torch.save(model.state_dict())"
        ) from None


def extract_state_dict(obj: Any, path: str | os.PathLike = "<checkpoint>",
                       nested_keys: Sequence[str] = NESTED_STATE_KEYS) -> dict[str, torch.Tensor]:
    """The tensor dict in ``obj`` (bare, or under one of ``nested_keys``), without DDP's ``module.`` prefix."""
    if isinstance(obj, Mapping):
        for key in nested_keys:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"checkpoint {path} holds no state_dict; expected a dict of tensors, or one under "
            + " / ".join(repr(k) for k in nested_keys)
        )
    state = {str(k).removeprefix("module."): v for k, v in obj.items()}
    refuse_non_finite(state, path)
    return state


def refuse_non_finite(state: Mapping[str, torch.Tensor], path: str | os.PathLike = "<checkpoint>") -> None:
    """A NaN or infinite value in any floating-point tensor is one line naming the tensor."""
    for name, tensor in state.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"checkpoint {path}: tensor {name} holds {bad} NaN or infinite value(s) of "
                                  f"{tensor.numel()}; the weights are broken (a diverged run?): use an earlier "
                                  "checkpoint")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``extract_state_dict(read_checkpoint(path))``."""
    return extract_state_dict(read_checkpoint(path), path)


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], path: str | os.PathLike = "<checkpoint>",
              *, hint: str = "check that the checkpoint was saved from the same network") -> None:
    """Load ``state`` into ``model`` strictly; a mismatch is one line naming the first offending key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        if missing:
            detail = f"{len(missing)} missing keys (e.g. {missing[0]})"
        elif unexpected:
            detail = f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})"
        else:
            k = mismatched[0]
            detail = (f"{len(mismatched)} keys with another shape (e.g. {k}: "
                      f"{tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise CheckpointError(f"checkpoint {path} does not fit this network: {detail}; {hint}")
    model.load_state_dict(dict(state), strict=True)


def load_file_into(model: nn.Module, path: str | os.PathLike, *,
                   hint: str = "check that the checkpoint was saved from the same network") -> None:
    """Read the state_dict at ``path`` (:func:`read_state_dict`) and load it strictly (:func:`load_into`)."""
    load_into(model, read_state_dict(path), path, hint=hint)
