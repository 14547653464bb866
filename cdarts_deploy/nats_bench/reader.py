"""The NATS-Bench topology "simple" layout: one folder, one small file per architecture.

    NATS-tss-v1_0-3ffb9-simple/
        meta.pickle.pbz2        the 15,625 architecture strings in benchmark index order
        000000.pickle.pbz2      the full record of architecture 0 (per schedule '12' and '200')
        ...

Only the meta file and the one record asked for are read (each within
:mod:`~cdarts_deploy.nats_bench.safe_pickle`'s bounds), so memory stays at one record whatever the
size of the benchmark.  The older single file (``NAS-Bench-201-v1_*.pth``, a torch pickle of every
record, 2 GB) is refused: reading it means running its pickle in full.

Accuracies follow the benchmark's own reporting (NATS-Bench ``get_more_info``, paper Table 2): the
mean over seeds at the last epoch of the schedule; CIFAR-10 validation is the ``cifar10-valid`` run's
``x-valid`` split and its test the ``cifar10`` run's ``ori-test``; CIFAR-100 and ImageNet16-120 use
their ``x-valid`` and ``x-test`` halves of the test set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdarts_deploy.nats_bench.errors import BenchmarkError
from cdarts_deploy.nats_bench.safe_pickle import load_pbz2

#: Datasets in the order the benchmark and the paper report them.
DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
#: Number of architectures of the topology space (5 operations on 6 edges).
NUM_ARCHS = 15625
META_FILE = "meta.pickle.pbz2"
SIMPLE_LAYOUT_HINT = (
    "download the NATS-Bench topology 'simple' folder NATS-tss-v1_0-3ffb9-simple (meta.pickle.pbz2 and one "
    "NNNNNN.pickle.pbz2 per architecture; https://github.com/D-X-Y/NATS-Bench) and pass that folder"
)

# (run name, split) of the validation and test accuracy per dataset.
_SPLITS = {
    "cifar10": (("cifar10-valid", "x-valid"), ("cifar10", "ori-test")),
    "cifar100": (("cifar100", "x-valid"), ("cifar100", "x-test")),
    "ImageNet16-120": (("ImageNet16-120", "x-valid"), ("ImageNet16-120", "x-test")),
}


@dataclass(frozen=True)
class Accuracy:
    """Top-1 accuracy in percent (mean over seeds), the number of seeds, and the network's size."""

    valid: float | None
    test: float | None
    seeds: int
    params_m: float | None  # millions of parameters as the benchmark counts them

    def as_dict(self) -> dict[str, Any]:
        return dict(valid=self.valid, test=self.test, seeds=self.seeds, params_m=self.params_m)


def record_file(index: int) -> str:
    return f"{index:06d}.pickle.pbz2"


class Benchmark:
    """A benchmark folder of the simple layout; reads the meta file once, a record per call."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._archs: list[str] | None = None
        self._index: dict[str, int] | None = None

    @property
    def archs(self) -> list[str]:
        """The architecture strings in benchmark index order."""
        if self._archs is None:
            path = self.folder / META_FILE
            meta = load_pbz2(path)
            archs = meta.get("meta_archs") if isinstance(meta, dict) else None
            if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs) or not archs:
                raise BenchmarkError("has no list of architecture strings ('meta_archs'); " + SIMPLE_LAYOUT_HINT,
                                     str(path))
            self._archs = archs
        return self._archs

    def index_of(self, arch: str) -> int | None:
        """The benchmark index of architecture string ``arch``, or None when the benchmark lacks it."""
        if self._index is None:
            self._index = {a: i for i, a in enumerate(self.archs)}
        return self._index.get(arch)

    def arch(self, index: int) -> str:
        if not 0 <= index < len(self.archs):
            raise BenchmarkError(f"has no architecture {index}; expected an index 0..{len(self.archs) - 1}",
                                 str(self.folder))
        return self.archs[index]

    def has_record(self, index: int) -> bool:
        return (self.folder / record_file(index)).is_file()

    def record(self, index: int, schedule: str = "200") -> dict[str, Any]:
        """The record of architecture ``index`` for ``schedule`` ('12' or '200' epochs)."""
        arch = self.arch(index)
        path = self.folder / record_file(index)
        if not path.is_file():
            raise BenchmarkError(
                f"has no record of architecture {index} ({record_file(index)}); pass the full benchmark folder",
                str(self.folder))
        data = load_pbz2(path)
        entry = data.get(schedule) if isinstance(data, dict) else None
        if not isinstance(entry, dict):
            raise BenchmarkError(f"has no {schedule}-epoch schedule; expected a NATS-Bench topology record",
                                 str(path))
        if entry.get("arch_index") != index or entry.get("arch_str") != arch:
            raise BenchmarkError(
                f"holds architecture {entry.get('arch_index')!r}, not {index} as its name says; "
                "copy the file again from the benchmark", str(path))
        if not isinstance(entry.get("all_results"), dict):
            raise BenchmarkError("has no 'all_results'; expected a NATS-Bench topology record", str(path))
        return entry

    def accuracies(self, index: int, schedule: str = "200") -> dict[str, Accuracy]:
        """Validation and test accuracy per dataset of :data:`DATASETS`."""
        entry = self.record(index, schedule)
        source = str(self.folder / record_file(index))
        results = entry["all_results"]
        out = {}
        for dataset, ((valid_run, valid_split), (test_run, test_split)) in _SPLITS.items():
            valid, valid_seeds, _ = _mean_final(results, valid_run, valid_split, source)
            test, test_seeds, params = _mean_final(results, test_run, test_split, source)
            out[dataset] = Accuracy(valid=valid, test=test, seeds=max(valid_seeds, test_seeds), params_m=params)
        return out


def _mean_final(results: dict, run: str, split: str, source: str) -> tuple[float | None, int, float | None]:
    """(mean final-epoch accuracy over seeds, seeds, params in millions) of ``split`` in run ``run``."""
    values, params = [], None
    for key, result in results.items():
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] == run):
            continue
        if not isinstance(result, dict) or not isinstance(result.get("eval_acc1es"), dict):
            raise BenchmarkError(f"result {key!r} has no 'eval_acc1es'; expected a NATS-Bench topology record",
                                 source)
        epochs = result.get("epochs")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise BenchmarkError(f"result {key!r} has no epoch count; expected a NATS-Bench topology record", source)
        value = result["eval_acc1es"].get(f"{split}@{epochs - 1}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values.append(float(value))
        if isinstance(result.get("params"), (int, float)):
            params = float(result["params"])
    if not values:
        return None, 0, params
    return sum(values) / len(values), len(values), params


def open_benchmark(path: str | os.PathLike) -> Benchmark:
    """The benchmark at ``path`` (a simple-layout folder); the single ``.pth`` file is refused."""
    folder = Path(path)
    source = str(folder)
    if folder.suffix == ".pth" or (folder.is_dir() and not (folder / META_FILE).is_file()
                                   and any(folder.glob("*.pth"))):
        raise BenchmarkError(
            "is the single-file benchmark (.pth), which can only be read by running its whole pickle; "
            + SIMPLE_LAYOUT_HINT, source)
    if not folder.is_dir():
        raise BenchmarkError("is not a folder; " + SIMPLE_LAYOUT_HINT, source)
    if not (folder / META_FILE).is_file():
        raise BenchmarkError(f"has no {META_FILE}; " + SIMPLE_LAYOUT_HINT, source)
    return Benchmark(folder)
