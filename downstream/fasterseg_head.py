"""The FasterSeg-style real-time decoder of the CDARTS segmentation transfer (paper Section 4.6.4).

Inputs are four backbone features at strides 4, 8, 16 and 32.  With width
factor F:

* stride 32 -> 1x1 conv-BN-ReLU to 16F, upsample x2, concatenate the stride-16
  feature, 3x3 conv-BN-ReLU to 16F;
* the same again down to stride 8 with 8F channels, then a 1x1 feature-fusion
  conv;
* final head: the stride-4 feature projected to 48 channels, a light
  self-attention block on the stride-8 map, upsample, concatenate, 3x3
  conv-BN-ReLU to ``channels``, then the 1x1 classifier of
  :class:`~mmseg.models.decode_heads.decode_head.BaseDecodeHead`.

The auxiliary heads (stride 16 and 32, weight 0.2) and OHEM are plain mmseg
parts configured in the configs (``FCNHead`` and ``OHEMPixelSampler``).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from torch import nn

__all__ = ["FasterSegHead", "GlobalContextAttention"]


class GlobalContextAttention(nn.Module):
    """Light self-attention: attention-pooled global context added back to every position.

    One softmax over positions (not a positions x positions matrix), so its cost
    is linear in the map size and it stays cheap at 1024x2048 inputs.
    """

    def __init__(self, channels: int, ratio: float = 0.25) -> None:
        super().__init__()
        hidden = max(8, int(channels * ratio))
        self.key = nn.Conv2d(channels, 1, kernel_size=1)
        self.transform = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        weights = self.key(x).view(n, 1, h * w).softmax(dim=-1)  # where to look
        context = torch.bmm(x.view(n, c, h * w), weights.transpose(1, 2)).view(n, c, 1, 1)
        return x + self.transform(context)


@MODELS.register_module()
class FasterSegHead(BaseDecodeHead):
    """FasterSeg-style decoder (CDARTS paper, Section 4.6.4).

    Args:
        width_factor: FasterSeg's width factor F (6 for Cityscapes, 16 for ADE20K).
        low_level_channels: width the stride-4 feature is projected to (48).
        in_channels / in_index: the four backbone features, strides 4, 8, 16, 32 in that order
            (``in_index`` defaults to ``[0, 1, 2, 3]``).
        input_transform: accepted as in ``BaseDecodeHead``; only ``'multiple_select'`` (the default)
            fits, since the decoder needs the four maps separately.
        channels: width of the last 3x3 conv before the classifier.
        Other arguments as in mmseg's ``BaseDecodeHead`` (``sampler`` for OHEM, ``loss_decode``, ...).
    """

    def __init__(
        self,
        width_factor: int = 6,
        low_level_channels: int = 48,
        in_index: Sequence[int] = (0, 1, 2, 3),
        input_transform: Optional[str] = "multiple_select",
        **kwargs,
    ) -> None:
        if input_transform != "multiple_select":
            raise ValueError(
                f"FasterSegHead input_transform={input_transform!r}: only 'multiple_select' is supported "
                "(the decoder fuses the stride 4, 8, 16 and 32 features one by one); drop the setting or use it"
            )
        super().__init__(input_transform=input_transform, in_index=list(in_index), **kwargs)
        if len(self.in_channels) != 4:
            raise ValueError(f"FasterSegHead needs 4 inputs (strides 4, 8, 16, 32), got in_channels={self.in_channels}")
        c4, c8, c16, c32 = self.in_channels
        wide, narrow = 16 * width_factor, 8 * width_factor
        conv = dict(conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        self.project32 = ConvModule(c32, wide, 1, **conv)
        self.fuse16 = ConvModule(wide + c16, wide, 3, padding=1, **conv)
        self.project16 = ConvModule(wide, narrow, 1, **conv)
        self.fuse8 = ConvModule(narrow + c8, narrow, 3, padding=1, **conv)
        self.feature_fusion = ConvModule(narrow, narrow, 1, **conv)
        self.project4 = ConvModule(c4, low_level_channels, 1, **conv)
        self.attention = GlobalContextAttention(narrow)
        self.refine = ConvModule(narrow + low_level_channels, self.channels, 3, padding=1, **conv)

    def _up_to(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        # Resize to the skip feature's size (not x2) so odd input sizes still line up.
        return resize(x, size=like.shape[2:], mode="bilinear", align_corners=self.align_corners)

    def _forward_feature(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        f4, f8, f16, f32 = self._transform_inputs(inputs)
        x = self.project32(f32)
        x = self.fuse16(torch.cat([self._up_to(x, f16), f16], dim=1))
        x = self.project16(x)
        x = self.fuse8(torch.cat([self._up_to(x, f8), f8], dim=1))
        x = self.attention(self.feature_fusion(x))
        low = self.project4(f4)
        return self.refine(torch.cat([self._up_to(x, low), low], dim=1))

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.cls_seg(self._forward_feature(inputs))
