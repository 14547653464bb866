"""Parameter and multiply-add counting.

Expected values are hand-computed (tiny models) or published (DARTS paper anchors, paper Table 5).
"""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import backbones  # noqa: F401  (registers the timm models)
from backbones.complexity import count_macs, count_macs_inclusive, count_params


def tiny() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),  # 8*8 outputs * 4 ch * (3*3*3) = 6912 MACs
        nn.BatchNorm2d(4),  # 256 elements
        nn.ReLU(),  # 256 elements
        nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False),  # depthwise: 8*8*4 * 9 = 2304 MACs
        nn.MaxPool2d(2),  # 4*4*4 = 64 elements
        nn.AdaptiveAvgPool2d(1),  # 4 elements
        nn.Flatten(),
        nn.Linear(4, 5),  # 20 MACs
    )


def test_count_macs_hand_computed():
    assert count_macs(tiny(), (8, 8)) == 6912 + 2304 + 20
    assert count_macs(tiny(), 8) == 6912 + 2304 + 20


def test_count_macs_inclusive_adds_one_per_bn_act_pool_element():
    assert count_macs_inclusive(tiny(), 8) == 6912 + 2304 + 20 + 256 + 256 + 64 + 4


def test_counting_restores_training_flags_and_ignores_batch_stats():
    model = tiny().train()
    model[1].eval()  # a mixed state must come back as it was
    before = model[1].running_mean.clone()
    count_macs(model, 8)
    count_macs_inclusive(model, 8)
    assert model.training and not model[1].training
    assert torch.equal(model[1].running_mean, before)  # ran in eval mode


def test_count_params_hand_computed_and_excludes_aux_head():
    model = tiny()
    assert count_params(model) == 4 * 27 + 2 * 4 + 4 * 9 + 4 * 5 + 5
    wrapper = nn.Module()
    wrapper.body = model
    wrapper.aux_head = nn.Linear(10, 10)
    assert count_params(wrapper) == count_params(model)


def test_input_size_from_pretrained_cfg():
    model = timm.create_model("darts_v2_cifar", width=4, cells=5)
    assert count_macs(model) == count_macs(model, 32)


def test_darts_v2_exact_parameter_anchors():
    # DARTS (Liu et al.) reference sizes; the auxiliary head must be excluded
    cifar = timm.create_model("darts_v2_cifar", auxiliary=True)
    assert count_params(cifar) == 3_349_342
    assert sum(p.numel() for p in cifar.parameters()) > 3_349_342
    assert count_params(timm.create_model("darts_v2_imagenet", auxiliary=True)) == 4_718_752


@pytest.mark.parametrize(
    "name,params_m",
    [
        # paper Table 5 (ImageNet): published parameter counts in millions, rounded
        ("darts_v2_imagenet", 4.7),
        ("pdarts_imagenet", 4.9),
        ("pcdarts_imagenet", 5.3),
    ],
)
def test_imagenet_params_match_published(name, params_m):
    # full-size multiply-adds need a 224x224 forward pass: see `python -m backbones.complexity` instead
    assert round(count_params(timm.create_model(name)) / 1e6, 1) == params_m
