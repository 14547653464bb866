"""Passes on pools: ``spatial_means_to_global_pools`` and ``average_pools_as_depthwise_convs``.

Both are local patterns, written as onnxscript rewrite rules.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from onnxscript import ir
from onnxscript.rewriter import pattern

from cdarts_deploy.deploy.int8_passes.graph import apply_rules, attribute, constant


class _SpatialMeanAxesInput(pattern.RewriteRuleClassBase):
    """``ReduceMean(x, axes=[2, 3], keepdims=1)`` (opset 18 and later: axes as an input) -> GlobalAveragePool:
    ONNX Runtime has an 8-bit global pool but no 8-bit ReduceMean."""

    def pattern(self, op, x, axes):
        return op.ReduceMean(x, axes, _allow_other_attributes=True, _outputs=["mean"])

    def check(self, context, x, axes, mean) -> pattern.MatchResult:
        found = constant(axes)
        return _spatial_mean(mean.producer(), None if found is None else [int(a) for a in found.ravel()])

    def rewrite(self, op, x, axes, mean):
        return op.GlobalAveragePool(x)


class _SpatialMeanAxesAttribute(pattern.RewriteRuleClassBase):
    """The same, with the axes as an attribute (before opset 18)."""

    def pattern(self, op, x):
        return op.ReduceMean(x, _allow_other_attributes=True, _outputs=["mean"])

    def check(self, context, x, mean) -> pattern.MatchResult:
        return _spatial_mean(mean.producer(), attribute(mean.producer(), "axes", None))

    def rewrite(self, op, x, mean):
        return op.GlobalAveragePool(x)


def _spatial_mean(node: ir.Node, axes: list[int] | None) -> pattern.MatchResult:
    result = pattern.MatchResult()
    if attribute(node, "keepdims", 1) != 1:
        return result.fail("keepdims=0 drops the spatial dimensions a global pool keeps")
    shape = node.inputs[0].shape if node.inputs and node.inputs[0] is not None else None
    if shape is None or len(shape) != 4:  # over the last two axes of a 3-D or 5-D tensor it is no global pool
        return result.fail("not an N x C x H x W tensor of known rank")
    if axes is None or sorted(axes) not in ([2, 3], [-2, -1]):
        return result.fail("not a mean over height and width")
    return result


def spatial_means_to_global_pools(model: Any) -> int:
    """Replace ``ReduceMean`` over height and width (keeping dimensions) with ``GlobalAveragePool``, in place;
    returns how many.  Same result; without it a squeeze-excitation block turns its whole input back to float."""
    return apply_rules(model, [_SpatialMeanAxesInput.rule(), _SpatialMeanAxesAttribute.rule()])


def exact_uint8_scale(values: np.ndarray) -> float | None:
    """A scale 1/q (q a whole number) at which every one of ``values`` (>= 0) is a whole number of steps
    below 256, so that unsigned 8 bits with zero point 0 hold them exactly; None if there is none."""
    top = float(values.max())
    for q in range(1, 256):
        if top * q > 255 + 1e-9:
            break
        if np.allclose(values * q, np.round(values * q), rtol=0, atol=1e-6):
            return 1.0 / q
    return None


class _PoolPlan(NamedTuple):
    channels: int
    kernel: list[int]
    strides: list[int]
    pads: list[int]
    factor: np.ndarray | None  # per-position k*k / count when padded pixels are left out of the count
    scale: float | None  # the 8-bit scale that holds ``factor`` exactly


def _pool_plan(node: ir.Node, shape: ir.Shape | None) -> _PoolPlan | None:
    """How a 2-D AveragePool becomes a depthwise convolution, or None where it cannot exactly."""
    dims = list(shape) if shape is not None else []
    if len(dims) != 4 or not all(isinstance(d, int) and d >= 1 for d in dims[1:]):
        return None  # the border factors need the spatial size
    if attribute(node, "ceil_mode", 0) or attribute(node, "auto_pad", "NOTSET") not in ("", "NOTSET") or \
            any(d != 1 for d in attribute(node, "dilations", [1, 1])):
        return None
    _, channels, height, width = dims
    kh, kw = attribute(node, "kernel_shape", None)
    sh, sw = attribute(node, "strides", [1, 1])
    top, left, bottom, right = attribute(node, "pads", [0, 0, 0, 0])
    covered = np.pad(np.ones((height, width)), ((top, bottom), (left, right)))
    rows, cols = (covered.shape[0] - kh) // sh + 1, (covered.shape[1] - kw) // sw + 1
    counts = np.array([[covered[i * sh:i * sh + kh, j * sw:j * sw + kw].sum() for j in range(cols)]
                       for i in range(rows)])
    factor = (kh * kw / counts).astype(np.float32)
    if attribute(node, "count_include_pad", 0) or np.all(factor == 1):
        return _PoolPlan(channels, [kh, kw], [sh, sw], [top, left, bottom, right], None, None)
    scale = exact_uint8_scale(factor)
    if scale is None:
        return None
    return _PoolPlan(channels, [kh, kw], [sh, sw], [top, left, bottom, right], factor, scale)


class _AveragePoolAsDepthwise(pattern.RewriteRuleClassBase):
    """``AveragePool`` -> a depthwise Conv with equal weights (then a constant border ``Mul`` where padded
    pixels are left out of the count).  Records each border factor's exact 8-bit scale in ``corrections``."""

    def __init__(self, corrections: dict[str, float]) -> None:
        super().__init__()
        self.corrections = corrections

    def pattern(self, op, x):
        return op.AveragePool(x, _allow_other_attributes=True, _outputs=["pooled"])

    def check(self, context, x, pooled) -> pattern.MatchResult:
        result = pattern.MatchResult()
        return result if _pool_plan(pooled.producer(), x.shape) else result.fail("no exact depthwise form")

    def rewrite(self, op, x, pooled):
        plan = _pool_plan(pooled.producer(), x.shape)
        stem = f"{pooled.name}__as_depthwise"
        kh, kw = plan.kernel
        weight = np.full((plan.channels, 1, kh, kw), 1.0 / (kh * kw), np.float32)
        sums = op.Conv(x, op.initializer(ir.tensor(weight), name=f"{stem}_weight"),
                       op.initializer(ir.tensor(np.zeros(plan.channels, np.float32)), name=f"{stem}_bias"),
                       group=plan.channels, kernel_shape=plan.kernel, strides=plan.strides, pads=plan.pads)
        if plan.factor is None:
            return sums
        # one factor per channel too: ONNX Runtime's 8-bit Mul broadcasting a [1, 1, H, W] map over the
        # channels-last layout runs a small span per pixel, a full [1, C, H, W] map runs per row
        full = np.ascontiguousarray(np.broadcast_to(plan.factor, (plan.channels, *plan.factor.shape))[None])
        name = f"{stem}_count_correction"
        self.corrections[name] = plan.scale
        return op.Mul(sums, op.initializer(ir.tensor(full), name=name))


def average_pools_as_depthwise_convs(model: Any) -> dict[str, float]:
    """Turn each 2-D ``AveragePool`` whose input channels, height and width are known numbers into a depthwise
    convolution with equal weights, in place; returns the border-correction tensors added, with the 8-bit scale
    that holds each exactly (:func:`exact_uint8_scale`; 1, 1.5 and 2.25 for 3x3 at scale 1/4).  A pool whose
    border factors no 8-bit scale holds exactly stays a pool."""
    return pools_as_depthwise(model)[1]


def pools_as_depthwise(model: Any) -> tuple[int, dict[str, float]]:
    """:func:`average_pools_as_depthwise_convs`, also returning how many pools were rewritten."""
    corrections: dict[str, float] = {}
    return apply_rules(model, [_AveragePoolAsDepthwise.rule(corrections)]), corrections
