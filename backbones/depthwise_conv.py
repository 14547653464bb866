"""Depthwise convolution whose CPU backward runs on oneDNN's fast depthwise kernels.

Why: on CPU, PyTorch runs ``conv2d(groups=C)`` through oneDNN.  oneDNN's depthwise backward
kernels take only undilated kernels, and for the weight gradient only kernels at most 3 wide and
no taller than the input; any other depthwise backward (5x5, dilated) falls to its generic grouped
kernel, which pads every one-channel group to a block of 16 and costs several times the forward
(``benchmarks/depthwise_backward.py`` measures it; figures: docs/results/search_step_cpu_kernels.md).  The same sums
can be had from the fast kernels by rewriting the convolution:

* input gradient at stride 1 (any dilation): a forward correlation of the output gradient with the
  flipped kernel; oneDNN's forward depthwise kernel takes any size and dilation;
* weight gradient at dilation d, stride 1: an output column w reads only input columns of its
  phase w % d, so in channels-last memory the d column phases are d*C channels of a (free) view
  and the width dilation disappears; in height the kernel becomes an undilated one of d*(k-1)+1
  rows of which every d-th is the real kernel's (other memory orders: the d*d phases stacked along
  the batch, a copy);
* dilation d at a stride that d divides: only every d-th input pixel is read, so subsampling the
  input gives an undilated convolution with stride s / d and padding p / d;
* a kernel wider than 3: its weight gradient is the concatenation of those of column slices of
  width <= 3, each a convolution of the input cropped to the columns it reads.

``DepthwiseConv2d`` is an ``nn.Conv2d`` (same parameters and state_dict keys) that takes this
backward only while training with gradients on CPU tensors outside autocast; in eval mode, under
no_grad, under TorchScript, ``torch.jit.trace`` or ONNX export it is a plain ``conv2d``.  Models are
built with plain ``nn.Conv2d``; the training entry points (search, ``cdarts-train``) opt in for CPU
runs with :func:`use_faster_depthwise_backward`, so a user's own loop never runs this backward unasked.
"""

# No ``from __future__ import annotations``: TorchScript compiles forward() and cannot resolve
# string annotations.

from typing import List, Optional, Tuple

import torch
import torch.fx
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["DepthwiseConv2d", "depthwise_conv2d", "depthwise_conv2d_backward", "takes_faster_backward",
           "use_faster_depthwise_backward"]

Tensor = torch.Tensor


def _is_channels_last(t: Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _to_phases(t: Tensor, d: int) -> Tensor:
    """(N, C, H, W) -> (d*d*N, C, H/d, W/d): phase (r, q) holds pixels [r::d, q::d], batch-major per phase."""
    n, c, h, w = t.shape
    if _is_channels_last(t):  # permute in (N, H, W, C) order so the copy stays channels-last
        v = t.permute(0, 2, 3, 1).reshape(n, h // d, d, w // d, d, c).permute(2, 4, 0, 1, 3, 5)
        return v.reshape(d * d * n, h // d, w // d, c).permute(0, 3, 1, 2)
    v = t.reshape(n, c, h // d, d, w // d, d).permute(3, 5, 0, 1, 2, 4)
    return v.reshape(d * d * n, c, h // d, w // d)


def _aten_backward(
    x: Tensor, weight: Tensor, grad_out: Tensor, stride: int, padding: Tuple[int, int], mask: List[bool]
) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """torch's own backward of an undilated depthwise convolution (what autograd would call)."""
    gx, gw, _ = torch.ops.aten.convolution_backward(
        grad_out, x, weight, None, [stride, stride], list(padding), [1, 1], False, [0, 0], weight.shape[0],
        [mask[0], mask[1], False],
    )
    return gx, gw


def _undilated_weight_grad(
    x: Tensor, weight: Tensor, grad_out: Tensor, stride: int, padding: Tuple[int, int]
) -> Tensor:
    """Weight gradient of an undilated depthwise convolution, in column slices of <= 3 (oneDNN's fast kernel)."""
    k_h, k_w = weight.shape[-2:]
    p_h, p_w = padding
    tall = k_h > x.shape[-2]  # oneDNN's depthwise kernel also wants the kernel no taller than the unpadded input
    if k_w <= 3 and not tall:
        return _aten_backward(x, weight, grad_out, stride, padding, [False, True])[1]
    # Each slice's gradient is that of a convolution of the input cropped to the columns the slice reads,
    # zero-padded in width (F.pad crops where a pad is negative), and in height where the kernel is taller
    # than the input (else the call pads in height).
    span = (grad_out.shape[-1] - 1) * stride
    rows = (p_h, p_h) if tall else (0, 0)
    parts = []
    for start in range(0, k_w, 3):
        width = min(3, k_w - start)
        first, last = start - p_w, start + span + width - 1 - p_w  # the input columns this slice reads
        if last < 0 or first >= x.shape[-1]:  # only padding (a wide kernel on a tiny input): zero gradient
            parts.append(weight.new_zeros(weight.shape[:-1] + (width,)))
            continue
        crop = F.pad(x, (-first, last + 1 - x.shape[-1]) + rows)
        parts.append(_aten_backward(crop, weight[..., start:start + width].contiguous(), grad_out, stride,
                                    (0 if tall else p_h, 0), [False, True])[1])
    return torch.cat(parts, dim=-1)


def _flipped_input_grad(weight: Tensor, grad_out: Tensor, padding: int, dilation: int) -> Optional[Tensor]:
    """Input gradient of a stride-1 depthwise convolution as a forward correlation with the flipped kernel.

    oneDNN's forward depthwise kernel takes any size and dilation and runs faster than its backward-data
    kernel.  None where the padding exceeds the kernel's reach (the correlation would need negative padding).
    """
    reach = dilation * (weight.shape[-1] - 1)
    if weight.shape[-2] != weight.shape[-1] or padding > reach:
        return None
    return F.conv2d(grad_out, weight.flip(2, 3), None, 1, reach - padding, dilation, weight.shape[0])


def _undilated_backward(
    x: Tensor, weight: Tensor, grad_out: Tensor, stride: int, padding: int, need_x: bool, need_w: bool
) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """Gradients of an undilated, square-padded depthwise convolution."""
    gx = _flipped_input_grad(weight, grad_out, padding, 1) if need_x and stride == 1 else None
    pads = (padding, padding)
    if weight.shape[-1] <= 3:  # one call gives both (gx from it only if the flipped form was not taken)
        a, gw = _aten_backward(x, weight, grad_out, stride, pads, [need_x and gx is None, need_w])
        return (gx if gx is not None else a), gw
    if need_x and gx is None:
        gx = _aten_backward(x, weight, grad_out, stride, pads, [True, False])[0]
    return gx, (_undilated_weight_grad(x, weight, grad_out, stride, pads) if need_w else None)


def _width_phase_view(t: Tensor, d: int) -> Tensor:
    """A channels-last (N, C, H, W) tensor seen as (N, d*C, H, W/d) without a copy: channel r*C + c holds
    the columns r::d of channel c (in memory, column w of channel c is at (w // d) * d*C + (w % d) * C + c)."""
    n, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).reshape(n, h, w // d, d * c).permute(0, 3, 1, 2)


def depthwise_conv2d_backward(
    x: Tensor,
    weight: Tensor,
    grad_out: Tensor,
    stride: Tuple[int, int],
    padding: Tuple[int, int],
    dilation: Tuple[int, int],
    need_x: bool = True,
    need_w: bool = True,
) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """Gradients (input, weight) of ``conv2d(x, weight, stride, padding, dilation, groups=C)`` without bias.

    Rewrites the convolution as undilated ones (see the module docstring); shapes it cannot rewrite
    (unequal strides, paddings or dilations per axis, sizes not divisible by the dilation) get torch's
    own backward.
    """
    (s, s_w), (p, p_w), (d, d_w) = stride, padding, dilation
    n, c, h, w = x.shape
    h_out, w_out = grad_out.shape[-2:]
    k = weight.shape[-1]
    square = s == s_w and p == p_w and d == d_w and weight.shape[-2] == k
    if square and d == 1:
        return _undilated_backward(x, weight, grad_out, s, p, need_x, need_w)
    if square and s == 1 and p % d == 0 and not (h % d or w % d or h_out % d or w_out % d):
        gx = _flipped_input_grad(weight, grad_out, p, d) if need_x else None
        gw: Optional[Tensor] = None
        if need_w and _is_channels_last(x) and _is_channels_last(grad_out):
            # Width phases as channels (a free view); in height the dilated kernel becomes an undilated one
            # of d*(k-1)+1 rows, of which every d-th is the real kernel's.
            tall = weight.new_zeros(d * c, 1, d * (k - 1) + 1, k)
            g = _undilated_weight_grad(_width_phase_view(x, d), tall, _width_phase_view(grad_out, d), 1, (p, p // d))
            gw = g.view(d, c, 1, d * (k - 1) + 1, k)[:, :, :, ::d].sum(0)
        elif need_w:  # all d*d phases stacked along the batch (copies)
            gw = _undilated_backward(_to_phases(x, d), weight, _to_phases(grad_out, d), 1, p // d, False, True)[1]
        if not need_x or gx is not None:
            return gx, gw
    if square and s % d == 0 and p % d == 0:
        sub = x[:, :, ::d, ::d]
        rows = (sub.shape[-2] + 2 * (p // d) - k) // (s // d) + 1
        cols = (sub.shape[-1] + 2 * (p // d) - k) // (s // d) + 1
        if (rows, cols) == (h_out, w_out):
            sub = sub.contiguous(memory_format=torch.channels_last if _is_channels_last(x) else torch.contiguous_format)
            gsub, gw = _undilated_backward(sub, weight, grad_out, s // d, p // d, need_x, need_w)
            gx = None
            if gsub is not None:  # pixels the convolution never reads get zero gradient
                gx = torch.zeros_like(x)
                gx[:, :, ::d, ::d] = gsub
            return gx, gw
    gx, gw, _ = torch.ops.aten.convolution_backward(
        grad_out, x, weight, None, list(stride), list(padding), list(dilation), False, [0, 0], weight.shape[0],
        [need_x, need_w, False],
    )
    return gx, gw


class _DepthwiseConv2dFunction(torch.autograd.Function):
    """conv2d(groups=C) forward as torch computes it, backward by :func:`depthwise_conv2d_backward`."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, stride: Tuple[int, int], padding: Tuple[int, int],
                dilation: Tuple[int, int]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conv = (stride, padding, dilation)
        return F.conv2d(x, weight, None, stride, padding, dilation, weight.shape[0])

    @staticmethod
    @once_differentiable  # no double backward (nothing in the project takes one)
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.conv
        gx, gw = depthwise_conv2d_backward(x, weight, grad_out, stride, padding, dilation,
                                           ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return gx, gw, None, None, None


@torch.fx.wrap  # a single node under symbolic tracing, not a trace through the autograd.Function
def depthwise_conv2d(
    x: Tensor, weight: Tensor, stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int]
) -> Tensor:
    """Bias-free ``conv2d(groups=C)``; on CPU with gradients enabled, with the faster backward."""
    custom = (torch.is_grad_enabled() and x.device.type == "cpu" and weight.device.type == "cpu"
              and (x.requires_grad or weight.requires_grad)
              # under autocast the forward runs in bf16/fp16 while the saved input stays fp32: torch's own
              # backward handles that mix, the rewritten one does not
              and not torch.is_autocast_enabled("cpu")
              and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export())
    if custom:
        return _DepthwiseConv2dFunction.apply(x, weight, stride, padding, dilation)
    return F.conv2d(x, weight, None, stride, padding, dilation, weight.shape[0])


def takes_faster_backward(kernel_size: int, stride: int, dilation: int) -> bool:
    """Whether the rewritten backward beats torch's own: all but an undilated kernel of at most 3x3 at a
    stride > 1, the one case oneDNN's fast kernel already takes."""
    return not (kernel_size <= 3 and dilation == 1 and stride > 1)


@register_notrace_module  # a leaf of timm's fx tracer, like the nn.Conv2d it replaces
class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(C, C, k, groups=C, bias=False)`` with the faster CPU backward while training."""

    def __init__(self, channels: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> None:
        super().__init__(channels, channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=channels, bias=False)
        self.rewrite_backward = takes_faster_backward(kernel_size, stride, dilation)

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():  # TorchScript skips this block and compiles the plain conv below
            if self.training and self.rewrite_backward:
                return depthwise_conv2d(x, self.weight, self.stride, self.padding, self.dilation)
        return self._conv_forward(x, self.weight, self.bias)


def use_faster_depthwise_backward(module: nn.Module) -> int:
    """Turn every plain bias-free depthwise ``nn.Conv2d`` under ``module`` (e.g. in a timm model) into a
    :class:`DepthwiseConv2d` holding the same weight Parameter; names, state_dict and results are unchanged.
    Returns how many were turned."""
    turned = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if not _plain_depthwise(child):
                continue
            fast = DepthwiseConv2d(child.in_channels, child.kernel_size[0], stride=child.stride[0],
                                   padding=child.padding[0], dilation=child.dilation[0])
            fast.weight = child.weight  # the same Parameter: optimizers and weight pools keep referring to it
            fast.train(child.training)
            setattr(parent, name, fast)
            turned += 1
    return turned


def _plain_depthwise(m: nn.Module) -> bool:
    """An ``nn.Conv2d`` itself (not a subclass such as timm's same-padding conv), depthwise, bias-free, zero
    padded, with one kernel size, stride, padding and dilation for both axes."""
    if type(m) is not nn.Conv2d or m.bias is not None or m.padding_mode != "zeros" or isinstance(m.padding, str):
        return False
    square = all(len(set(v)) == 1 for v in (m.kernel_size, m.stride, m.padding, m.dilation))
    return square and m.groups == m.in_channels == m.out_channels
