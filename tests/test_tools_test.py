"""tools/test.py --tta on the tiny data (the configs' tta_model/tta_pipeline: three scales x two flips from
mmdet's RetinaNet base, six scales x two flips from mmseg's Cityscapes base), and mmseg's own (stock)
train.py/test.py running our segmentation config.

Checkpoints are the configs' models with their initial weights, saved as mmengine-style checkpoints: TTA
changes the predictions of any network, trained or not.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from downstream.synthetic_data import make_tiny_cityscapes, make_tiny_coco

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "downstream" / "configs"
DET_CONFIG = str(CONFIGS / "retinanet_cdarts-a_fpn_1x_coco.py")
SEG_CONFIG = str(CONFIGS / "fasterseg_cdarts-b_cityscapes-1024x2048.py")


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _loaders(root: Path) -> list[str]:
    opts = []
    for kind in ("train", "val", "test"):
        opts += [f"{kind}_dataloader.dataset.data_root={root}/", f"{kind}_dataloader.num_workers=0",
                 f"{kind}_dataloader.persistent_workers=False"]
    return opts


def _initial_checkpoint(config: str, options: dict, path: Path) -> Path:
    from mmengine.registry import MODELS, DefaultScope

    from downstream.runner_setup import load_config

    cfg = load_config(config, options)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
        model.init_weights()
    torch.save({"meta": {"iter": 0}, "state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    from mmdet.datasets import CocoDataset

    return make_tiny_coco(tmp_path_factory.mktemp("coco"), splits={"train": 2, "val": 2}, size=(64, 64),
                          category_names=CocoDataset.METAINFO["classes"])


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory) -> Path:
    root = make_tiny_cityscapes(tmp_path_factory.mktemp("cityscapes"), splits={"train": 2, "val": 2}, size=(64, 128))
    _run("tools/prepare_cityscapes.py", str(root))
    return root


def _det_opts(coco: Path) -> list[str]:
    ann = coco / "annotations" / "instances_val2017.json"
    return _loaders(coco) + [
        "val_dataloader.dataset.pipeline.1.scale=(64,64)", "test_dataloader.dataset.pipeline.1.scale=(64,64)",
        f"val_evaluator.ann_file={ann}", f"test_evaluator.ann_file={ann}", "model.backbone.init_cfg=None",
        "model.test_cfg.score_thr=0.0"]


def _seg_opts(root: Path) -> list[str]:
    return _loaders(root) + [
        "model.backbone.init_cfg=None", "model.data_preprocessor.size=(64,64)", "train_dataloader.batch_size=2",
        "train_dataloader.dataset.pipeline.2.scale=(128,64)", "train_dataloader.dataset.pipeline.3.crop_size=(64,64)",
        "val_dataloader.dataset.pipeline.1.scale=(128,64)", "test_dataloader.dataset.pipeline.1.scale=(128,64)",
        "train_cfg.max_iters=1", "train_cfg.val_interval=1", "default_hooks.checkpoint.interval=1",
        "default_hooks.logger.interval=1"]


# mmdet's RetinaNet TTA resizes to 1333x800, 666x400 and 2000x1200: tiny-image sizes instead
DET_TTA_SCALES = ["tta_pipeline.1.transforms.0.0.scale=(64,64)", "tta_pipeline.1.transforms.0.1.scale=(32,32)",
                  "tta_pipeline.1.transforms.0.2.scale=(96,96)"]


def test_tta_detector_merges_scales_and_flips(coco, tmp_path):
    ckpt = _initial_checkpoint(DET_CONFIG, {"model.backbone.init_cfg": None}, tmp_path / "det.pth")
    results = {}
    for tta in (False, True):
        name = "tta" if tta else "plain"
        proc = _run("tools/test.py", DET_CONFIG, str(ckpt), "--work-dir", str(tmp_path / name),
                    "--out", str(tmp_path / f"{name}.pkl"), "--json", str(tmp_path / f"{name}.json"),
                    *(["--tta"] if tta else []), "--cfg-options", *_det_opts(coco), *DET_TTA_SCALES)
        assert "coco/bbox_mAP" in json.loads((tmp_path / f"{name}.json").read_text())
        with open(tmp_path / f"{name}.pkl", "rb") as fh:  # our own file, written by mmdet's DumpDetResults
            results[name] = pickle.load(fh)
        if tta:
            assert "DetTTAModel" in proc.stdout + proc.stderr  # the runner's config dump names the wrapper
    assert len(results["tta"]) == len(results["plain"]) == 2
    for plain, tta in zip(results["plain"], results["tta"]):
        assert tta["img_id"] == plain["img_id"]
        a, b = plain["pred_instances"]["bboxes"], tta["pred_instances"]["bboxes"]
        assert len(b) > 0 and (a.shape != b.shape or not torch.allclose(a, b))  # six passes were merged


def test_tta_segmentor_uses_the_config_tta(cityscapes, tmp_path):
    opts = {"model.backbone.init_cfg": None, "model.decode_head.norm_cfg.type": "BN"}
    ckpt = _initial_checkpoint(SEG_CONFIG, opts, tmp_path / "seg.pth")
    maps = {}
    for tta in (False, True):
        name = "tta" if tta else "plain"
        proc = _run("tools/test.py", SEG_CONFIG, str(ckpt), "--work-dir", str(tmp_path / f"work_{name}"),
                    "--out", str(tmp_path / name), "--json", str(tmp_path / f"{name}.json"),
                    *(["--tta"] if tta else []), "--cfg-options", *_seg_opts(cityscapes))
        assert "mIoU" in json.loads((tmp_path / f"{name}.json").read_text())
        if tta:
            assert "SegTTAModel" in proc.stdout + proc.stderr
        maps[name] = {p.name: np.asarray(Image.open(p)) for p in (tmp_path / name).rglob("*.png")}
    assert sorted(maps["tta"]) == sorted(maps["plain"]) and len(maps["tta"]) == 2
    # six scales x two flips averaged: some pixel changes class
    assert any((maps["tta"][k] != maps["plain"][k]).any() for k in maps["tta"])


MMSEG_TOOLS = Path(importlib.util.find_spec("mmseg").origin).parent / ".mim" / "tools"


def test_stock_mmseg_tools_train_and_test_our_config(cityscapes, tmp_path):
    opts = _seg_opts(cityscapes)
    proc = _run(str(MMSEG_TOOLS / "train.py"), SEG_CONFIG, "--work-dir", str(tmp_path), "--cfg-options", *opts)
    assert re.search(r"Iter\(train\)\s*\[1/1\]", proc.stdout + proc.stderr)  # one iteration
    ckpt = torch.load(tmp_path / "iter_1.pth", map_location="cpu", weights_only=True)  # plain data
    assert ckpt["meta"]["iter"] == 1
    proc = _run(str(MMSEG_TOOLS / "test.py"), SEG_CONFIG, str(tmp_path / "iter_1.pth"),
                "--work-dir", str(tmp_path / "test"), "--cfg-options", *opts)
    assert re.search(r"Iter\(test\).*mIoU: ", proc.stdout + proc.stderr)
