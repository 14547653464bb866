"""Safe reading of CIFAR-10/100 python-pickle batches, as distributed by their authors.

The batch files are pickles, so they are read with an unpickler that admits nothing but numpy arrays
and plain containers: a file holding any other object is refused before anything runs.  Layout:
``cifar-10-batches-py/data_batch_1..5`` + ``test_batch``, or ``cifar-100-python/train`` + ``test``;
``root`` may be that folder or its parent.  Every problem raises :class:`CifarError` with one line.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from cdarts_deploy.errors import UserError

__all__ = ["CifarError", "CIFAR_DATASETS", "find_cifar_dir", "load_cifar", "num_classes"]

# dataset -> (folder, training files, test files, label key, classes)
_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}
CIFAR_DATASETS = tuple(_LAYOUT)


class CifarError(UserError):
    """A missing, damaged or unsafe CIFAR batch folder."""


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Admits the few numpy globals a pickled array needs and refuses everything else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if name == "_reconstruct":
            return _reconstruct
        if name == "_frombuffer":
            return _frombuffer
        if name == "scalar":
            return _scalar
        if name == "encode":
            return codecs.encode
        return getattr(np, name)


def _reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise pickle.UnpicklingError("refusing to rebuild a non-ndarray class")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _scalar(dtype: Any, data: Any = None) -> Any:
    dtype = np.dtype(dtype)
    if dtype.hasobject or not isinstance(data, bytes):
        raise pickle.UnpicklingError("refusing a non-numeric numpy scalar")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _frombuffer(buf: bytes, dtype: Any, shape: Any, order: str) -> np.ndarray:
    arr = np.frombuffer(buf, dtype=np.dtype(dtype))
    return arr.reshape(shape, order=order).copy()


def read_batch(path: Path) -> dict:
    """One batch file as a dict with ``str`` keys."""
    try:
        with open(path, "rb") as fh:
            doc = _ArrayOnlyUnpickler(fh, encoding="bytes").load()
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise CifarError(
            f"{path}: cannot read this CIFAR batch file ({type(exc).__name__}: {str(exc)[:80] or 'truncated'}); "
            "re-extract the original python-version archive"
        ) from None
    if not isinstance(doc, dict):
        raise CifarError(f"{path}: found a pickled {type(doc).__name__}, expected the CIFAR batch dictionary")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in doc.items()}


def num_classes(dataset: str) -> int:
    return _LAYOUT[dataset][4]


def find_cifar_dir(root: str | Path, dataset: str, split: str = "train") -> Path:
    """The folder holding ``dataset``'s ``split`` files: ``root`` itself or ``root/<archive folder>``."""
    root = Path(root)
    folder, train_files, test_files, _, _ = _LAYOUT[dataset]
    files = train_files if split == "train" else test_files
    for candidate in (root, root / folder):
        if all((candidate / f).is_file() for f in files):
            return candidate
    if not root.is_dir():
        raise CifarError(f"{root}: no such directory; pass --data-root with the extracted {folder} folder")
    where = root / folder if (root / folder).is_dir() else root
    missing = [f for f in files if not (where / f).is_file()]
    raise CifarError(
        f"{where}: missing {', '.join(missing)}; --data-root must hold the extracted python-version {folder} folder"
    )


def load_cifar(root: str | Path, dataset: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images of ``split`` (``train`` or ``test``) as uint8 ``[N, 32, 32, 3]`` and int64 labels."""
    if dataset not in _LAYOUT:
        raise CifarError(f"unknown CIFAR dataset {dataset!r}; expected one of {', '.join(_LAYOUT)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = find_cifar_dir(root, dataset, split)
    _, train_files, test_files, label_key, classes = _LAYOUT[dataset]
    images, labels = [], []
    for name in train_files if split == "train" else test_files:
        path = directory / name
        batch = read_batch(path)
        data, lab = batch.get("data"), batch.get(label_key)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            shape = getattr(data, "shape", None)
            raise CifarError(f"{path}: 'data' is {shape} {getattr(data, 'dtype', type(data).__name__)}, "
                             "expected uint8 rows of 3072 values (32x32x3); re-extract the original archive")
        lab = np.asarray(lab if lab is not None else [], dtype=np.int64)
        if lab.shape != (data.shape[0],) or (lab.size and (lab.min() < 0 or lab.max() >= classes)):
            raise CifarError(f"{path}: {label_key!r} does not hold one label 0..{classes - 1} per "
                             "image; re-extract the original archive")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(lab)
    return np.concatenate(images), np.concatenate(labels)
