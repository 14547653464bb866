"""The FasterSeg-style decode head: FasterSeg wiring (paper Section 4.6.4), losses with OHEM, attention block."""

from __future__ import annotations

import torch
from mmengine.registry import DefaultScope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from downstream.fasterseg_head import FasterSegHead, GlobalContextAttention

IN_CHANNELS = [24, 40, 96, 320]


def _features(n: int = 2, size: int = 64) -> list[torch.Tensor]:
    return [torch.randn(n, c, size // s, size // s) for c, s in zip(IN_CHANNELS, (4, 8, 16, 32))]


def _head(**extra) -> FasterSegHead:
    cfg = dict(
        type="FasterSegHead", in_channels=IN_CHANNELS, in_index=[0, 1, 2, 3], width_factor=2,
        channels=16, num_classes=5, norm_cfg=dict(type="BN", requires_grad=True), **extra,
    )
    # An earlier mmdet Runner in the same process leaves "mmdet" as mmengine's default scope.
    with DefaultScope.overwrite_default_scope("mmseg"):
        return MODELS.build(cfg)


def test_decoder_widths_follow_width_factor():
    head = _head()
    f = 2
    assert head.project32.conv.out_channels == 16 * f
    assert head.fuse16.conv.in_channels == 16 * f + 96 and head.fuse16.conv.out_channels == 16 * f
    assert head.project16.conv.out_channels == 8 * f
    assert head.fuse8.conv.in_channels == 8 * f + 40 and head.fuse8.conv.out_channels == 8 * f
    assert head.project4.conv.out_channels == 48
    assert head.refine.conv.in_channels == 8 * f + 48


def test_logits_at_stride_4_and_odd_sizes():
    head = _head().eval()
    with torch.no_grad():
        assert head(_features()).shape == (2, 5, 16, 16)
        odd = [torch.randn(1, c, h, w) for c, (h, w) in zip(IN_CHANNELS, ((17, 25), (9, 13), (5, 7), (3, 4)))]
        assert head(odd).shape == (1, 5, 17, 25)


def test_loss_with_ohem_sampler_backpropagates():
    head = _head(sampler=dict(type="OHEMPixelSampler", thresh=0.7, min_kept=50))
    samples = []
    for _ in range(2):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, 64, 64)))
        samples.append(s)
    losses = head.loss(_features(), samples, train_cfg={})
    assert torch.isfinite(losses["loss_ce"]) and losses["loss_ce"] > 0
    losses["loss_ce"].backward()
    assert head.project32.conv.weight.grad is not None and head.conv_seg.weight.grad.abs().sum() > 0


def test_global_context_attention_is_global_and_shape_preserving():
    block = GlobalContextAttention(16).eval()
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        y = block(x)
        x2 = x.clone()
        x2[..., 7, 7] += 5.0  # change one corner pixel
        y2 = block(x2)
    assert y.shape == x.shape
    # Through the pooled context, a change at one position reaches every other position.
    assert (y2[..., 0, 0] - y[..., 0, 0]).abs().sum() > 0


def test_input_transform_and_in_index_are_accepted_as_in_base_decode_head():
    import pytest

    head = _head(input_transform="multiple_select")  # a config may spell out BaseDecodeHead's arguments
    assert head.input_transform == "multiple_select" and head.in_index == [0, 1, 2, 3]
    cfg = dict(type="FasterSegHead", in_channels=IN_CHANNELS, width_factor=2, channels=16, num_classes=5,
               norm_cfg=dict(type="BN", requires_grad=True))
    with DefaultScope.overwrite_default_scope("mmseg"):
        default = MODELS.build(cfg)  # in_index defaults to the four levels in order
        assert default.in_index == [0, 1, 2, 3]
        assert default(_features()).shape == (2, 5, 16, 16)
        with pytest.raises(ValueError, match="multiple_select"):
            MODELS.build(dict(cfg, input_transform="resize_concat"))
