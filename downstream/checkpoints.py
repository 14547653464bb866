"""Checkpoints that load under torch's ``weights_only`` unpickler.

mmengine 0.10's Runner stores its MessageHub (``HistoryBuffer`` objects and
numpy scalars) in every checkpoint, and torch >= 2.6 refuses those by default,
so a stock ``test.py`` cannot read what ``train.py`` just wrote.  Two narrow
fixes, neither of which enables unrestricted unpickling:

* :class:`PlainCheckpointHook` rewrites the non-tensor state into plain
  Python/tensor data before saving (and back after loading, so ``--resume``
  restores the log history).  Our configs and tools add it.
* :func:`mmengine_safe_globals` allowlists numpy's scalar/array/dtype
  reconstruction only, for files that carry numpy values in their metadata.

A stock mmengine checkpoint stays refused: its pickled ``HistoryBuffer``
refers to its methods through ``builtins.getattr``, which can reach anything,
so no allowlist can admit it safely.  Re-save such a file's ``state_dict``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.registry import HOOKS

__all__ = ["PlainCheckpointHook", "to_plain", "from_plain", "mmengine_safe_globals", "SAFE_GLOBALS"]

_BUFFER_TAG = "__history_buffer__"


def to_plain(obj: Any) -> Any:
    """``obj`` with numpy values, HistoryBuffers and dict/list subclasses turned into plain data."""
    if isinstance(obj, HistoryBuffer):
        log, count = obj.data
        return {_BUFFER_TAG: True, "log": to_plain(log), "count": to_plain(count), "max_length": obj.max_length}
    if isinstance(obj, torch.Tensor) or obj is None or type(obj) in (bool, int, float, str, bytes):
        return obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj)) if obj.dtype != object else [to_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):  # also ConfigDict, OrderedDict
        return {to_plain(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(to_plain(v) for v in obj)
    if isinstance(obj, (list, set)):
        return [to_plain(v) for v in obj]
    for base in (bool, int, float, str):  # subclasses such as IntEnum
        if isinstance(obj, base):
            return base(obj)
    # Anything else (rare runtime_info entries) is kept as text rather than as a pickled object.
    return repr(obj)


def from_plain(obj: Any) -> Any:
    """Undo :func:`to_plain` for HistoryBuffers (the rest needs no conversion)."""
    if isinstance(obj, dict):
        if obj.get(_BUFFER_TAG) is True:
            log = np.asarray(obj["log"].numpy() if isinstance(obj["log"], torch.Tensor) else obj["log"])
            count = np.asarray(obj["count"].numpy() if isinstance(obj["count"], torch.Tensor) else obj["count"])
            return HistoryBuffer(log.tolist(), count.tolist(), obj["max_length"])
        return {k: from_plain(v) for k, v in obj.items()}
    return obj


@HOOKS.register_module()
class PlainCheckpointHook(Hook):
    """Save checkpoints that ``torch.load(..., weights_only=True)`` accepts."""

    priority = "VERY_LOW"  # after every other hook has added its part of the checkpoint

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        for key in list(checkpoint):
            if key != "state_dict":  # model tensors are already plain; skip the big walk
                checkpoint[key] = to_plain(checkpoint[key])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if "message_hub" in checkpoint:
            checkpoint["message_hub"] = from_plain(checkpoint["message_hub"])


def _numpy_globals() -> list:
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
    found = [core.multiarray.scalar, core.multiarray._reconstruct, np.ndarray, np.dtype]
    # numpy >= 1.25 pickles dtypes as instances of per-type classes (Float64DType, ...).
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        found += [getattr(dtypes, n) for n in dir(dtypes)
                  if n.endswith("DType") and isinstance(getattr(dtypes, n), type)]
    return found


#: numpy reconstruction helpers: they build arrays and scalars only, never call arbitrary code.
SAFE_GLOBALS: list = _numpy_globals()


@contextlib.contextmanager
def mmengine_safe_globals() -> Iterator[None]:
    """Within this block ``weights_only`` loads also accept numpy values (and nothing else)."""
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        yield
