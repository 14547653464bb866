"""Dataset helpers: the tiny real-format sets and the COCO layout check / subset tool."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from downstream.synthetic_data import COCO_SUBSET, make_tiny_cityscapes, make_tiny_coco


def _prepare_coco(argv):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "prepare_coco.py"
    spec = importlib.util.spec_from_file_location("prepare_coco", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def test_tiny_coco_is_read_by_pycocotools(tmp_path):
    root = make_tiny_coco(tmp_path / "coco", splits={"train": 3, "val": 1}, size=(48, 64))
    coco = COCO(str(root / "annotations" / "instances_train2017.json"))
    assert len(coco.getImgIds()) == 3
    assert sorted(coco.getCatIds()) == [i for i, _ in COCO_SUBSET]
    for ann in coco.loadAnns(coco.getAnnIds()):
        x, y, w, h = ann["bbox"]
        image = coco.loadImgs(ann["image_id"])[0]
        assert 0 <= x and 0 <= y and x + w <= image["width"] and y + h <= image["height"]
    with Image.open(root / "train2017" / image["file_name"]) as im:
        assert im.size == (64, 48)


def test_tiny_cityscapes_layout(tmp_path):
    root = make_tiny_cityscapes(tmp_path / "cs", splits={"val": 1}, size=(32, 64))
    imgs = list((root / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))
    labels = list((root / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))
    assert len(imgs) == len(labels) == 1
    ids = np.asarray(Image.open(labels[0]))
    assert ids.shape == (32, 64) and {7, 23} <= set(np.unique(ids).tolist())


def test_prepare_coco_checks_layout_and_writes_subset(tmp_path, capsys):
    root = make_tiny_coco(tmp_path / "coco", splits={"train": 3, "val": 2})
    assert _prepare_coco([str(root)]) == 0
    out = tmp_path / "mini"
    assert _prepare_coco([str(root), "--subset", "1", "--out", str(out)]) == 0
    doc = json.loads((out / "annotations" / "instances_val2017.json").read_text())
    assert len(doc["images"]) == 1 and all(a["image_id"] == doc["images"][0]["id"] for a in doc["annotations"])
    assert (out / "val2017" / doc["images"][0]["file_name"]).is_file()

    next((root / "train2017").iterdir()).unlink()
    capsys.readouterr()
    assert _prepare_coco([str(root)]) == 2
    assert "missing" in capsys.readouterr().err
