"""End to end on tiny real-format data: tools/train.py (2 iterations + evaluation), tools/test.py, --resume,
mmdet's own (stock) train.py/test.py with our configs, and the config recipe of docs/downstream.md.

Detection: RetinaNet on CDARTS-a, a 6-image COCO-format set, mmdet's CocoMetric (pycocotools).
Segmentation: the Cityscapes FasterSeg config on CDARTS-b, a 4-image Cityscapes-format set, mmseg's IoUMetric.
Image sizes are shrunk with --cfg-options only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backbones.factory import create_model_from_genotype
from downstream.synthetic_data import make_tiny_cityscapes, make_tiny_coco

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "downstream" / "configs"
TIMEOUT = 600


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    return proc


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _loader_opts(root: Path, kinds=("train", "val", "test")) -> list[str]:
    opts = []
    for kind in kinds:
        opts += [f"{kind}_dataloader.dataset.data_root={root}/", f"{kind}_dataloader.num_workers=0"]
    return opts


# ----- detection ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    from mmdet.datasets import CocoDataset

    # All 80 COCO categories in the file, as in the real annotations, so that predicted labels map to ids.
    return make_tiny_coco(tmp_path_factory.mktemp("coco"), splits={"train": 4, "val": 2}, size=(64, 64),
                          category_names=CocoDataset.METAINFO["classes"])


@pytest.fixture(scope="module")
def imagenet_checkpoint(tmp_path_factory) -> Path:
    """A timm classification checkpoint of CDARTS-a, as a user would bring from ImageNet training."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pretrained") / "cdarts_a_imagenet.pth"
    torch.save(create_model_from_genotype("cdarts_a").state_dict(), path)
    return path


def _det_opts(coco: Path, pretrained: Path) -> list[str]:
    ann = coco / "annotations" / "instances_val2017.json"
    return _loader_opts(coco) + [
        "train_dataloader.batch_size=2",
        "train_dataloader.dataset.pipeline.2.scale=(64,64)",
        "val_dataloader.dataset.pipeline.1.scale=(64,64)",
        "test_dataloader.dataset.pipeline.1.scale=(64,64)",
        f"val_evaluator.ann_file={ann}",
        f"test_evaluator.ann_file={ann}",
        f"model.backbone.init_cfg.checkpoint={pretrained}",
        "train_cfg.max_epochs=1",
        "default_hooks.logger.interval=1",
        # After two iterations every score is near the focal-loss prior (0.01); keep them so COCOeval has input.
        "model.test_cfg.score_thr=0.0",
    ]


@pytest.fixture(scope="module")
def trained_detector(tmp_path_factory, coco, imagenet_checkpoint):
    work = tmp_path_factory.mktemp("det_work")
    config = str(CONFIGS / "retinanet_cdarts-a_fpn_1x_coco.py")
    proc = _ok(_run("tools/train.py", config, "--work-dir", str(work), "--auto-scale-lr",
                    "--cfg-options", *_det_opts(coco, imagenet_checkpoint)))
    return config, work, proc


def test_train_detector_two_iterations_and_coco_eval(trained_detector):
    _, work, proc = trained_detector
    log = proc.stdout + proc.stderr
    assert re.search(r"Epoch\(train\)\s*\[1\]\[2/2\]", log)  # 4 images, batch 2: exactly two iterations
    assert re.search(r"grad_norm: \d", log)  # the base config clips gradients (max_norm 35)
    assert not re.search(r"Epoch\(train\)\s*\[1\]\[3/", log)
    assert "coco/bbox_mAP" in log  # evaluation ran through CocoMetric after the epoch
    assert "CDARTSBackbone: loaded" in log  # the ImageNet checkpoint came in through init_cfg
    assert (work / "epoch_1.pth").is_file()


def test_checkpoint_loads_with_weights_only(trained_detector):
    _, work, _ = trained_detector
    ckpt = torch.load(work / "epoch_1.pth", map_location="cpu", weights_only=True)  # no allowlist needed
    assert {"meta", "state_dict", "message_hub", "optimizer"} <= set(ckpt)
    assert any(k.startswith("backbone.body.") for k in ckpt["state_dict"])
    assert ckpt["meta"]["epoch"] == 1 and ckpt["meta"]["iter"] == 2
    # --auto-scale-lr: lr 0.02 is for 16 images per step; this run had 1 process x 2 images.
    assert ckpt["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(0.02 * 2 / 16)


def test_test_tool_reports_coco_metrics(trained_detector, coco, imagenet_checkpoint, tmp_path):
    config, work, _ = trained_detector
    out = tmp_path / "metrics.json"
    results = tmp_path / "results.pkl"
    _ok(_run("tools/test.py", config, str(work / "epoch_1.pth"), "--work-dir", str(tmp_path / "work"),
             "--json", str(out), "--out", str(results), "--show-dir", "vis",
             "--cfg-options", *_det_opts(coco, imagenet_checkpoint)))
    metrics = json.loads(out.read_text())
    assert 0.0 <= metrics["coco/bbox_mAP"] <= 1.0 or metrics["coco/bbox_mAP"] == -1.0
    import pickle

    with open(results, "rb") as fh:  # mmdet's DumpDetResults format; our own file from this test
        dumped = pickle.load(fh)
    assert len(dumped) == 2 and {"img_id", "pred_instances"} <= set(dumped[0])
    drawn = sorted(p.name for p in (tmp_path / "work").glob("*/vis/*.jpg"))  # <work>/<timestamp>/vis, as mmdet
    assert len(drawn) == 2


def test_resume_continues_from_the_checkpoint(trained_detector, coco, imagenet_checkpoint, tmp_path):
    config, work, _ = trained_detector
    resumed = tmp_path / "resumed"
    opts = _det_opts(coco, imagenet_checkpoint) + ["train_cfg.max_epochs=2", "train_cfg.val_interval=5"]
    proc = _ok(_run("tools/train.py", config, "--work-dir", str(resumed), "--resume", str(work / "epoch_1.pth"),
                    "--cfg-options", *opts))
    log = proc.stdout + proc.stderr
    assert "resumed epoch: 1, iter: 2" in log
    assert re.search(r"Epoch\(train\)\s*\[2\]\[2/2\]", log) and not re.search(r"Epoch\(train\)\s*\[1\]", log)
    ckpt = torch.load(resumed / "epoch_2.pth", map_location="cpu", weights_only=True)
    assert ckpt["meta"]["iter"] == 4
    # The log history came back from the plain checkpoint: two losses from epoch 1, two from epoch 2.
    loss = ckpt["message_hub"]["log_scalars"]["train/loss"]
    assert len(loss["log"]) == 4


def test_bad_inputs_exit_2_with_one_line(tmp_path):
    proc = _run("tools/train.py", str(tmp_path / "missing.py"))
    assert proc.returncode == 2 and "config" in proc.stderr and "not found" in proc.stderr
    proc = _run("tools/test.py", str(CONFIGS / "retinanet_cdarts-a_fpn_1x_coco.py"), str(tmp_path / "none.pth"))
    assert proc.returncode == 2 and "checkpoint" in proc.stderr and "not found" in proc.stderr


# ----- mmdet's own tools, unmodified -------------------------------------------------------------

MMDET_TOOLS = Path(importlib.util.find_spec("mmdet").origin).parent / ".mim" / "tools"
# Runs a stock script as `python script args` would, in a process where mmsegmentation cannot be imported:
# the detection configs must not need it.
_WITHOUT_MMSEG = ("import runpy, sys; sys.modules['mmseg'] = None; script = sys.argv[1]; sys.argv = sys.argv[1:]; "
                  "runpy.run_path(script, run_name='__main__')")


def _stock_opts(coco: Path, pretrained: Path) -> list[str]:
    # mmdet's tools do not drop persistent_workers for num_workers=0 as ours do.
    return _det_opts(coco, pretrained) + [f"{k}_dataloader.persistent_workers=False" for k in ("train", "val", "test")]


def test_stock_mmdet_tools_train_and_test_our_config_without_mmseg(coco, imagenet_checkpoint, tmp_path):
    config = str(CONFIGS / "retinanet_cdarts-a_fpn_1x_coco.py")
    opts = _stock_opts(coco, imagenet_checkpoint) + ["train_dataloader.batch_size=4", "train_cfg.val_interval=2"]
    proc = _ok(_run("-c", _WITHOUT_MMSEG, str(MMDET_TOOLS / "train.py"), config, "--work-dir", str(tmp_path),
                    "--cfg-options", *opts))
    assert re.search(r"Epoch\(train\)\s*\[1\]\[1/1\]", proc.stdout + proc.stderr)  # one iteration
    proc = _ok(_run("-c", _WITHOUT_MMSEG, str(MMDET_TOOLS / "test.py"), config, str(tmp_path / "epoch_1.pth"),
                    "--work-dir", str(tmp_path / "test"), "--cfg-options", *opts))
    assert re.search(r"Epoch\(test\).*coco/bbox_mAP: ", proc.stdout + proc.stderr)


def _doc_recipe() -> str:
    """The config snippet of docs/downstream.md, section 2, exactly as written there."""
    text = (REPO / "docs" / "downstream.md").read_text()
    section = text.split("\n## 2.", 1)[1].split("\n## 3.", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_doc_recipe_writes_checkpoints_that_load_with_weights_only(coco, imagenet_checkpoint, tmp_path):
    config = tmp_path / "my_retinanet.py"
    config.write_text("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n" + _doc_recipe())
    opts = _stock_opts(coco, imagenet_checkpoint) + [
        "model.backbone.genotype=cdarts_a", "model.backbone.init_cfg=None",
        "train_dataloader.batch_size=4", "train_cfg.val_interval=2"]
    _ok(_run(str(MMDET_TOOLS / "train.py"), str(config), "--work-dir", str(tmp_path / "work"), "--cfg-options", *opts))
    ckpt = torch.load(tmp_path / "work" / "epoch_1.pth", map_location="cpu", weights_only=True)  # torch's default
    assert ckpt["meta"]["iter"] == 1 and "message_hub" in ckpt


# ----- segmentation ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory) -> Path:
    root = make_tiny_cityscapes(tmp_path_factory.mktemp("cityscapes"), splits={"train": 2, "val": 2}, size=(64, 128))
    _ok(_run("tools/prepare_cityscapes.py", str(root)))
    return root


def _seg_opts(root: Path) -> list[str]:
    return _loader_opts(root) + [
        "model.backbone.init_cfg=None",
        "model.data_preprocessor.size=(64,64)",
        "train_dataloader.batch_size=2",
        "train_dataloader.dataset.pipeline.2.scale=(128,64)",
        "train_dataloader.dataset.pipeline.3.crop_size=(64,64)",
        "val_dataloader.dataset.pipeline.1.scale=(128,64)",
        "test_dataloader.dataset.pipeline.1.scale=(128,64)",
        "train_cfg.max_iters=2",
        "train_cfg.val_interval=2",
        "default_hooks.checkpoint.interval=2",
        "default_hooks.logger.interval=1",
    ]


def test_prepare_cityscapes_maps_label_ids_to_train_ids(cityscapes):
    import numpy as np
    from PIL import Image

    for src in (cityscapes / "gtFine").rglob("*_gtFine_labelIds.png"):
        ids = np.asarray(Image.open(src))
        train = np.asarray(Image.open(str(src).replace("_labelIds", "_labelTrainIds")))
        # Official Cityscapes table: road 7->0, building 11->2, vegetation 21->8, sky 23->10, car 26->13.
        for label_id, train_id in ((7, 0), (11, 2), (21, 8), (23, 10), (26, 13)):
            assert np.all(train[ids == label_id] == train_id)
        assert np.all(train[ids == 0] == 255)


def test_train_and_test_segmentor_with_iou_metric(cityscapes, tmp_path):
    config = str(CONFIGS / "fasterseg_cdarts-b_cityscapes-1024x2048.py")
    work = tmp_path / "work"
    proc = _ok(_run("tools/train.py", config, "--work-dir", str(work), "--cfg-options", *_seg_opts(cityscapes)))
    log = proc.stdout + proc.stderr
    assert re.search(r"Iter\(train\)\s*\[2/2\]", log) and "mIoU" in log
    ckpt = work / "iter_2.pth"
    assert ckpt.is_file()
    out = tmp_path / "metrics.json"
    _ok(_run("tools/test.py", config, str(ckpt), "--work-dir", str(tmp_path / "test"), "--json", str(out),
             "--cfg-options", *_seg_opts(cityscapes)))
    metrics = json.loads(out.read_text())
    assert 0.0 <= metrics["mIoU"] <= 100.0 and "aAcc" in metrics
