"""The shipped detection/segmentation configs: they build with the registries and follow the paper."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import downstream.checkpoints  # noqa: F401  (registers the hook)
import downstream.fasterseg_head  # noqa: F401
from downstream.mm_backbone import CDARTSBackbone

CONFIGS = Path(__file__).resolve().parents[1] / "downstream" / "configs"
DETECTION = ["retinanet_cdarts-a_fpn_1x_coco.py", "retinanet_cdarts-b_fpn_1x_coco.py",
             "retinanet_cdarts-imagenet_fpn_1x_coco.py"]
SEGMENTATION = ["fasterseg_cdarts-b_cityscapes-1024x2048.py", "fasterseg_cdarts-b_ade20k-640x640.py"]


def _build(name: str):
    cfg = Config.fromfile(str(CONFIGS / name))
    init_default_scope(cfg.default_scope)
    if cfg.default_scope == "mmdet":
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
        cfg.model.decode_head.norm_cfg = dict(type="BN", requires_grad=True)  # SyncBN needs a process group
        for aux in cfg.model.auxiliary_head:
            aux.norm_cfg = dict(type="BN", requires_grad=True)
    return cfg, MODELS.build(cfg.model)


@pytest.mark.parametrize("name", DETECTION)
def test_detection_config_builds_and_matches_the_paper(name):
    cfg, model = _build(name)
    assert isinstance(model.backbone, CDARTSBackbone)
    assert type(model).__name__ == "RetinaNet"
    # The neck is wired to what the backbone really outputs.
    assert list(cfg.model.neck.in_channels) == model.backbone.out_channels
    assert model.backbone.out_strides == [4, 8, 16, 32]
    # Paper Section 4.6.3: batch 16, SGD 0.02 / 0.9 / 1e-4, 12 epochs, steps at 8 and 11.
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == ("SGD", 0.02, 0.9, 1e-4)
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=35, norm_type=2)  # as mmdet's RetinaNet recipes
    assert cfg.auto_scale_lr.enable is False  # tools/train.py --auto-scale-lr turns it on
    assert cfg.train_cfg.max_epochs == 12
    steps = [s for s in cfg.param_scheduler if s.type == "MultiStepLR"]
    assert steps and list(steps[0].milestones) == [8, 11] and steps[0].gamma == 0.1
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 16
    # The base's own pipeline is kept: 1333x800 input.
    assert any(t.get("scale") == (1333, 800) for t in cfg.train_dataloader.dataset.pipeline)
    with torch.no_grad():
        model.eval()
        cls_scores, bbox_preds = model(torch.randn(1, 3, 64, 64), mode="tensor")
    assert len(cls_scores) == len(bbox_preds) == 5


@pytest.mark.parametrize("name,classes,factor", [(SEGMENTATION[0], 19, 6), (SEGMENTATION[1], 150, 16)])
def test_segmentation_config_builds_and_matches_the_paper(name, classes, factor):
    cfg, model = _build(name)
    assert type(model).__name__ == "EncoderDecoder"
    assert model.backbone.out_channels == [24, 40, 96, 320]  # 1x1 conv to 320 as last stage
    assert list(model.decode_head.in_channels) == model.backbone.out_channels
    head = model.decode_head
    assert type(head).__name__ == "FasterSegHead" and head.num_classes == classes
    assert head.fuse16.conv.out_channels == 16 * factor and head.fuse8.conv.out_channels == 8 * factor
    assert type(head.sampler).__name__ == "OHEMPixelSampler"
    aux = model.auxiliary_head
    assert [a.in_channels for a in aux] == [96, 320] and all(a.num_classes == classes for a in aux)
    assert [a.loss_decode.loss_weight for a in aux] == [0.2, 0.2]
    assert all(type(a.sampler).__name__ == "OHEMPixelSampler" for a in aux)
    # SyncBN everywhere; the backbone keeps the activations fused into timm's norm layers.
    assert sum(type(m).__name__ == "SyncBatchNormAct" for m in model.backbone.modules()) > 0
    with torch.no_grad():
        model.eval()
        logits = model(torch.randn(1, 3, 64, 64), mode="tensor")
    assert logits.shape == (1, classes, 16, 16)  # stride-4 logits before the final resize


def test_cityscapes_evaluates_full_resolution():
    cfg = Config.fromfile(str(CONFIGS / SEGMENTATION[0]))
    resize = [t for t in cfg.test_dataloader.dataset.pipeline if t.type == "Resize"]
    assert resize and tuple(resize[0].scale) == (2048, 1024) and resize[0].keep_ratio
    assert cfg.model.test_cfg.mode == "whole"


def test_configs_need_only_custom_imports():
    for name in DETECTION + SEGMENTATION:
        cfg = Config.fromfile(str(CONFIGS / name))
        assert "downstream.mm_backbone" in cfg.custom_imports.imports
        assert cfg.model.backbone.type == "CDARTSBackbone"
        assert any(h.type == "PlainCheckpointHook" for h in cfg.custom_hooks)
        # The detection configs must work where only mmdet is installed.
        assert ("downstream.fasterseg_head" in cfg.custom_imports.imports) == (name in SEGMENTATION)


def test_segmentation_config_states_what_follows_fasterseg():
    text = (CONFIGS / "_fasterseg_cdarts-b.py").read_text()
    assert "Follows FasterSeg" in text and "Does not follow FasterSeg" in text and "schedule_160k" in text
