"""The one CIFAR reader: python batches through an unpickler that admits only numpy arrays."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from cdarts_deploy.data import cifar
from cdarts_deploy.errors import UserError
from search import data as search_data
from search.errors import SearchInputError


def make_cifar10(root, per_batch=6):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        img = rng.integers(0, 255, (per_batch, 3072), dtype=np.uint8)
        with open(d / name, "wb") as fh:
            pickle.dump({b"labels": [i % 10 for i in range(per_batch)], b"data": img}, fh, protocol=2)
    return d


def test_reads_train_and_test_splits(tmp_path):
    make_cifar10(tmp_path)
    x, y = cifar.load_cifar(tmp_path, "cifar10", "train")
    assert x.shape == (30, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    xt, yt = cifar.load_cifar(tmp_path / "cifar-10-batches-py", "cifar10", "test")
    assert xt.shape == (6, 32, 32, 3) and list(yt) == list(range(6))


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_refuses_pickled_objects_and_missing_files(tmp_path):
    d = make_cifar10(tmp_path)
    with open(d / "test_batch", "wb") as fh:
        pickle.dump({b"data": _Exploit(), b"labels": []}, fh)
    with pytest.raises(cifar.CifarError, match="test_batch: cannot read.*refusing to load"):
        cifar.load_cifar(d, "cifar10", "test")
    (d / "data_batch_4").unlink()
    with pytest.raises(cifar.CifarError, match="missing data_batch_4"):
        cifar.load_cifar(d, "cifar10", "train")
    assert issubclass(cifar.CifarError, UserError)


def test_search_reads_through_the_same_reader(tmp_path):
    d = make_cifar10(tmp_path)
    assert not hasattr(search_data, "_ArrayOnlyUnpickler")  # one reader, in cdarts_deploy.data.cifar
    x, _ = search_data.load_cifar(d, "cifar10")
    assert np.array_equal(x, cifar.load_cifar(d, "cifar10")[0])
    (d / "data_batch_1").unlink()
    with pytest.raises(SearchInputError, match="missing data_batch_1"):
        search_data.load_cifar(d, "cifar10")


def test_training_reads_cifar_train_and_test_batches(tmp_path):
    import torch

    from cdarts_deploy.training.data import Cutout, read_datasets

    make_cifar10(tmp_path)
    data = read_datasets(tmp_path)  # detected from the batch files
    assert (data.dataset, len(data.train), len(data.val), data.num_classes) == ("cifar10", 30, 6, 10)
    assert data.natural_layout == "cifar" and data.val[0][0].size == (32, 32)
    torch.manual_seed(0)
    img = Cutout(4)(torch.ones(3, 32, 32))
    assert 0 < int((img == 0).sum()) <= 3 * 16  # one square of at most 4x4 pixels per channel
