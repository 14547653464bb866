"""cdarts_deploy.data.image_split: the data-preparation tools' stratified split."""

from __future__ import annotations

import numpy as np
import pytest

from cdarts_deploy.data.image_split import first_per_class, split
from cdarts_deploy.errors import UserError

LABELS = np.repeat(np.arange(3), 10)


def test_split_is_stratified_seeded_and_limited_per_class():
    train, val = split(LABELS, 0.2, 5, seed=0)
    assert sorted(train + val) == first_per_class(LABELS, 5) == [i for c in range(3) for i in range(10 * c, 10 * c + 5)]
    assert np.bincount(LABELS[val]).tolist() == [1, 1, 1]
    assert (train, val) == split(LABELS, 0.2, 5, seed=0)


def test_a_class_too_small_to_split_is_one_user_error():
    with pytest.raises(UserError, match="smallest class has 1.*--per-class"):
        split(LABELS, 0.2, 1, seed=0)
