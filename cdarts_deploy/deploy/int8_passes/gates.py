"""Passes on squeeze-excitation gates: ``hard_sigmoids_into_convs`` and ``tile_gates_along_width``."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper, numpy_helper
from onnxscript import ir
from onnxscript.rewriter import pattern

from cdarts_deploy.deploy.int8_passes.graph import apply_rules, attribute, constant, known_shapes

#: Name ending ONNX Runtime's quantizer gives the operator-format node that replaces a float node.
QUANTIZED_NODE_SUFFIX = "_quant"


class _HardSigmoidIntoConv(pattern.RewriteRuleClassBase):
    """``Conv(W, b) -> HardSigmoid`` becomes ``Conv(alpha * W, alpha * b + beta) -> Clip(0, 1)``: the same
    function, since ``HardSigmoid(y) = clip(alpha * y + beta, 0, 1)``.  The quantizer folds a Clip into its
    input's range as it folds a Relu (which needs the convolution's output to have no other reader), so the
    gate stays in 8 bits instead of a DequantizeLinear -> HardSigmoid -> QuantizeLinear island."""

    def pattern(self, op, x, w):
        conv = op.Conv(x, w, _allow_other_inputs=True, _allow_other_attributes=True, _outputs=["conv_out"])
        return op.HardSigmoid(conv, _allow_other_attributes=True, _outputs=["gate"])

    def check(self, context, x, w, conv_out, gate) -> pattern.MatchResult:
        result = pattern.MatchResult()
        conv = conv_out.producer()
        if constant(w) is None or (len(conv.inputs) > 2 and constant(conv.inputs[2]) is None):
            return result.fail("the convolution's weights are not constants")
        if conv_out.is_graph_output() or len(conv_out.uses()) != 1:
            return result.fail("the convolution's output has other readers")
        return result

    def rewrite(self, op, x, w, conv_out, gate):
        conv, hard = conv_out.producer(), gate.producer()
        alpha, beta = attribute(hard, "alpha", 0.2), attribute(hard, "beta", 0.5)
        weight = constant(w).astype(np.float64)
        bias = constant(conv.inputs[2]).astype(np.float64) if len(conv.inputs) > 2 else np.zeros(weight.shape[0])
        stem = f"{gate.name}__folded"
        folded = op.Conv(x, op.initializer(ir.tensor((weight * alpha).astype(np.float32)), name=f"{stem}_weight"),
                         op.initializer(ir.tensor((bias * alpha + beta).astype(np.float32)), name=f"{stem}_bias"),
                         **conv.attributes)
        return op.Clip(folded, op.initializer(ir.tensor(np.zeros((), np.float32)), name=f"{stem}_low"),
                       op.initializer(ir.tensor(np.ones((), np.float32)), name=f"{stem}_high"))


def hard_sigmoids_into_convs(model: Any) -> int:
    """Fold the affine part of each ``HardSigmoid`` that reads a convolution into that convolution, in place;
    returns how many."""
    return apply_rules(model, [_HardSigmoidIntoConv.rule()])


def broadcast_gates(model: Any) -> dict[str, tuple[int, int]]:
    """The ``Mul`` nodes that scale a [N, C, H, W] tensor (W > 1) by a per-channel [N, C, 1, 1] gate (the
    squeeze-excitation multiply): node name -> (which input is the gate, W).  Read from the shapes of the
    float graph, for :func:`tile_gates_along_width` after quantization."""
    shapes = known_shapes(model)
    found = {}
    for node in model.graph.node:
        if node.op_type != "Mul" or len(node.input) != 2:
            continue
        for gate in (0, 1):
            per_channel, tensor = shapes.get(node.input[gate], []), shapes.get(node.input[1 - gate], [])
            if (len(tensor) == 4 and len(per_channel) == 4 and per_channel[2:] == [1, 1] and tensor[3] > 1
                    and tensor[1] == per_channel[1] > 0):
                found[node.name] = (gate, tensor[3])
    return found


def tile_gates_along_width(model: Any, gates: dict[str, tuple[int, int]]) -> int:
    """Repeat the gate of each 8-bit squeeze-excitation multiply (``QLinearMul`` of a node found by
    :func:`broadcast_gates`) along the width before the multiply, in place; returns how many.

    ONNX Runtime runs the quantized network channels-last, where a [N, 1, 1, C] gate broadcast over
    [N, H, W, C] is one call of its 8-bit kernel per pixel; gated by [N, 1, W, C] it is one call per row.
    A ``Tile`` on the channels-last tensor is one the layout optimizer carries through, unlike ``Expand``,
    which brings transposes back.  The result is the same product.  A function on the quantized graph rather
    than a pattern: which multiplies are gates is read from the float graph's shapes, which quantization drops.
    """
    nodes, count = [], 0
    for node in model.graph.node:
        name = node.name[: -len(QUANTIZED_NODE_SUFFIX)] if node.name.endswith(QUANTIZED_NODE_SUFFIX) else None
        if node.op_type == "QLinearMul" and name in gates:
            gate, width = gates[name]
            position = 3 * gate  # QLinearMul inputs: a, a_scale, a_zero_point, b, b_scale, b_zero_point, ...
            repeats, tiled = f"{node.name}__gate_repeats", f"{node.input[position]}__along_width"
            model.graph.initializer.append(numpy_helper.from_array(np.array([1, 1, 1, width], np.int64), repeats))
            nodes.append(helper.make_node("Tile", [node.input[position], repeats], [tiled],
                                          name=f"{node.name}__tile_gate"))
            node.input[position] = tiled
            count += 1
        nodes.append(node)
    if count:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return count
