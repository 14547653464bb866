"""Route strided 1x1 convolutions around a oneDNN out-of-bounds write in their CPU weight gradient.

The facts (PyTorch 2.14 wheels, bundled oneDNN v3.12.0; ``docs/onednn_avx2_heap_corruption.md``,
``tools/repro_onednn_avx2.py``): the weight gradient of a 1x1 convolution with stride > 1, a
channels-last (nhwc) input and fewer input channels than oneDNN's channel block -- 8 for the AVX2
kernel ``jit_1x1:avx2``, 16 for the AVX-512 kernel ``jit_1x1:avx512_core`` -- writes past the
reduce-to-unit-stride workspace it books in its scratchpad.  With 1 thread that corrupts the heap
(glibc aborts with ``corrupted double-linked list`` / ``double free or corruption``, or SIGSEGV);
with more threads it overwrites the other threads' workspace and the reducer's barrier, giving
silently wrong weight gradients or a hang.  The AVX-512 kernel has the same defect, but at the
small feature maps of CPU searches the overflow stays inside allocation slack; it crashes from
about 64x64 inputs at batch 32.

The same sums without the strided kernel: a 1x1 convolution at stride s with no padding reads only
pixels (s*i, s*j), so subsampling first and convolving at stride 1 gives the same result, keeps
the channels-last layout, and never reaches the faulty code (the copy that oneDNN would make into
its workspace is made by PyTorch instead).

``CDARTS_ONEDNN_1X1_WORKAROUND`` = ``auto`` (default) | ``on`` | ``off`` overrides the decision, for
measuring the workaround and for checking that a test catches the crash without it.
"""

# No ``from __future__ import annotations``: TorchScript compiles StridedPointwiseConv2d.forward.

import functools
import os

import torch
import torch.fx
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import nn

__all__ = ["StridedPointwiseConv2d", "onednn_channel_block", "strided_pointwise_conv",
           "strided_1x1_weight_grad_unsafe"]

OVERRIDE_ENV = "CDARTS_ONEDNN_1X1_WORKAROUND"

Tensor = torch.Tensor


def _isa_block(name: str) -> int:
    """oneDNN's f32 channel block for an ISA name as written in ONEDNN_MAX_CPU_ISA or by
    ``torch.backends.cpu.get_cpu_capability()``: 16 for the AVX-512 / AVX10 families, else 8."""
    name = name.upper()
    return 16 if "512" in name or "AVX10" in name else 8


@functools.lru_cache(maxsize=None)
def onednn_channel_block() -> int:
    """The channel block (8 or 16) of the 1x1 kernel oneDNN runs on this CPU and environment.

    torch exposes ATen's CPU capability, not oneDNN's ISA.  Without overrides both follow the
    hardware; ``ONEDNN_MAX_CPU_ISA`` (or its old name ``DNNL_MAX_CPU_ISA``) caps oneDNN alone, and
    ``ATEN_CPU_CAPABILITY`` lowers ATen alone, in which case ATen no longer tells what oneDNN uses
    and the larger block is assumed (flagging more shapes is safe, flagging fewer is not)."""
    aten = torch.backends.cpu.get_cpu_capability()
    block = 16 if os.environ.get("ATEN_CPU_CAPABILITY") else _isa_block(aten)
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    if cap and cap.upper() not in ("ALL", "DEFAULT"):
        block = min(block, _isa_block(cap))
    return block


def strided_1x1_weight_grad_unsafe(in_channels: int, stride: int) -> bool:
    """Whether oneDNN's weight gradient of a bias-free, unpadded 1x1 convolution with ``in_channels``
    inputs at ``stride`` may write out of bounds on this CPU.

    It does when stride > 1, the input is channels-last and ``in_channels`` is below the channel block
    of the kernel oneDNN picks (8 on AVX2, 16 on AVX-512: :func:`onednn_channel_block`).  The memory
    format is not part of the test: a 1x1 weight is both NCHW- and channels-last-contiguous, so it
    does not tell which layout oneDNN will run, and the subsampled form costs little either way.
    False when oneDNN is off (``torch.backends.mkldnn.enabled = False``) or not built in."""
    mode = os.environ.get(OVERRIDE_ENV, "auto").lower()
    if mode in ("on", "off"):
        return mode == "on" and stride > 1
    if stride <= 1 or not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    return in_channels < onednn_channel_block()


@torch.fx.wrap  # one node under symbolic tracing: the decision needs the tensors' device and grad state
def strided_pointwise_conv(x: Tensor, weight: Tensor, stride: int) -> Tensor:
    """``conv2d(x, weight, stride=stride)`` for a bias-free 1x1 ``weight``; when training on CPU where
    :func:`strided_1x1_weight_grad_unsafe` says so, computed as a stride-1 conv of ``x[:, :, ::s, ::s]``
    (the same sums, off the faulty oneDNN kernel)."""
    reroute = (stride > 1 and torch.is_grad_enabled() and weight.requires_grad
               and x.device.type == "cpu" and weight.device.type == "cpu"
               and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()
               and strided_1x1_weight_grad_unsafe(weight.shape[1], stride))
    if reroute:
        return F.conv2d(x[:, :, ::stride, ::stride], weight)
    return F.conv2d(x, weight, None, stride)


@register_notrace_module  # a leaf of timm's fx tracer, like the nn.Conv2d it replaces
class StridedPointwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)`` whose training forward avoids the oneDNN
    strided 1x1 weight-gradient defect (:func:`strided_pointwise_conv`); same parameters and state_dict
    keys; in eval mode, under TorchScript, tracing or ONNX export it is the plain convolution."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():  # TorchScript skips this block and compiles the plain conv below
            if self.training:
                return strided_pointwise_conv(x, self.weight, self.stride[0])
        return self._conv_forward(x, self.weight, self.bias)
