"""Pass ``factorized_reductions_as_single_convs``: a factorized reduction becomes one 2x2 convolution.

A factorized reduction concatenates two 1x1 stride-2 convolutions of one tensor, the second read through a
one-pixel shift (``Slice`` from 1 on height and width, then a ``Pad`` of one zero row and column at the far
edge), usually followed by a BatchNormalization.  That is exactly one 2x2 stride-2 convolution with the far
edge padded: the first half of its filters holds the first convolution's weights at the top-left tap, the
second half the second's at the bottom-right tap, zeros elsewhere; the BatchNormalization is folded into it.
In 8 bits the pair is a float island (ONNX Runtime has no 8-bit Slice, and a BatchNormalization after a
Concat is not folded); the single convolution is one QLinearConv.  A graph-level function rather than a
pattern: the shift is a chain of one Slice per axis or one Slice for both, and the BatchNormalization is
optional, so one fixed pattern does not describe it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from onnx import helper, numpy_helper

from cdarts_deploy.deploy.int8_passes.graph import (
    consumers,
    drop_unused_initializers,
    graph_ends,
    int_attribute,
    ints_attributes,
    producers,
    replace_nodes,
)


class _Match(NamedTuple):
    concat: Any
    first: Any  # the unshifted 1x1 convolution
    second: Any  # the 1x1 convolution of the shifted tensor
    pad: Any


class _Graph:
    def __init__(self, model: Any) -> None:
        self.inits = {t.name: t for t in model.graph.initializer}
        self.readers, self.producer, self.ends = consumers(model), producers(model), graph_ends(model)

    def array(self, name: str) -> np.ndarray | None:
        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def only_reader(self, tensor: str) -> Any | None:
        readers = self.readers.get(tensor, [])
        return readers[0] if len(readers) == 1 and tensor not in self.ends else None

    def strided_pointwise(self, node: Any) -> bool:
        if node is None or node.op_type != "Conv" or self.array(node.input[1]) is None:
            return False
        ints = ints_attributes(node)
        return (self.array(node.input[1]).shape[2:] == (1, 1) and int_attribute(node, "group", 1) == 1
                and ints.get("strides") == [2, 2] and not any(ints.get("pads", [0]))
                and ints.get("dilations", [1, 1]) == [1, 1]
                and (len(node.input) < 3 or self.array(node.input[2]) is not None))

    def shifted_source(self, tensor: str) -> str | None:
        """The tensor that Slice nodes shift by one pixel on height and width to give ``tensor``."""
        starts: dict[int, int] = {}
        node = self.producer.get(tensor)
        while node is not None and node.op_type == "Slice" and len(node.input) >= 4:
            begin, stop, axes = (self.array(n) for n in node.input[1:4])
            steps = self.array(node.input[4]) if len(node.input) > 4 and node.input[4] else np.ones_like(begin)
            if any(a is None for a in (begin, stop, axes, steps)) or (steps != 1).any() or (stop < 2**31).any():
                return None
            for axis, start in zip(axes.ravel(), begin.ravel()):
                starts[int(axis) % 4] = starts.get(int(axis) % 4, 0) + int(start)
            tensor = node.input[0]
            node = self.producer.get(tensor) if self.only_reader(node.output[0]) else None
        return tensor if starts == {2: 1, 3: 1} else None

    def far_edge_pad(self, pad: Any, reader: Any) -> bool:
        """``pad`` adds one zero row and column at the far edge and only ``reader`` reads it."""
        if pad is None or pad.op_type != "Pad" or self.only_reader(pad.output[0]) is not reader:
            return False
        amounts = self.array(pad.input[1]) if len(pad.input) > 1 else None
        value = self.array(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(())
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        if amounts is None or value is None or mode != b"constant":
            return False
        return not float(value.ravel()[0] if value.size else 0) and list(amounts.ravel()) == [0, 0, 0, 0, 0, 0, 1, 1]

    def match(self, concat: Any) -> _Match | None:
        if concat.op_type != "Concat" or int_attribute(concat, "axis", 0) != 1 or len(concat.input) != 2:
            return None
        first, second = (self.producer.get(t) for t in concat.input)
        if not (self.strided_pointwise(first) and self.strided_pointwise(second)):
            return None
        if not all(self.only_reader(t) is concat for t in concat.input):
            return None
        pad = self.producer.get(second.input[0])
        if not self.far_edge_pad(pad, second) or self.shifted_source(pad.input[0]) != first.input[0]:
            return None
        return _Match(concat, first, second, pad)

    def folded_norm(self, tensor: str) -> Any | None:
        """The BatchNormalization that is the only reader of ``tensor`` and has constant parameters."""
        norm = self.only_reader(tensor)
        if norm is not None and norm.op_type == "BatchNormalization" and len(norm.output) == 1 and \
                all(self.array(t) is not None for t in norm.input[1:5]):
            return norm
        return None

    def single_conv_weights(self, m: _Match, norm: Any | None) -> tuple[np.ndarray, np.ndarray]:
        wa, wb = self.array(m.first.input[1]), self.array(m.second.input[1])
        ca, cb = wa.shape[0], wb.shape[0]
        weight = np.zeros((ca + cb, wa.shape[1], 2, 2), np.float32)
        weight[:ca, :, 0, 0], weight[ca:, :, 1, 1] = wa[:, :, 0, 0], wb[:, :, 0, 0]
        bias = np.concatenate([self.array(c.input[2]) if len(c.input) > 2 else np.zeros(len(w), np.float32)
                               for c, w in ((m.first, wa), (m.second, wb))]).astype(np.float32)
        if norm is not None:
            gamma, beta, mean, var = (self.array(t).astype(np.float64) for t in norm.input[1:5])
            eps = next((a.f for a in norm.attribute if a.name == "epsilon"), 1e-5)
            scale = gamma / np.sqrt(var + eps)
            weight = (weight * scale[:, None, None, None]).astype(np.float32)
            bias = ((bias - mean) * scale + beta).astype(np.float32)
        return weight, bias

    def shift_chain(self, m: _Match) -> list[int]:
        """ids of the Slice nodes of the shift, back to the source tensor."""
        chain, node = [], self.producer.get(m.pad.input[0])
        while node is not None and node.op_type == "Slice":
            chain.append(id(node))
            node = self.producer.get(node.input[0]) if node.input[0] != m.first.input[0] else None
        return chain


def factorized_reductions_as_single_convs(model: Any) -> int:
    """Turn each factorized reduction into one convolution, in place; returns how many."""
    graph = _Graph(model)
    all_nodes = list(model.graph.node)  # held, so that id() names each node for the whole rewrite
    removed: set[int] = set()  # ids of the nodes taken out
    added: dict[int, Any] = {}  # id of the node it replaces -> the single convolution
    for concat in all_nodes:
        m = graph.match(concat)
        if m is None:
            continue
        norm = graph.folded_norm(concat.output[0])
        weight, bias = graph.single_conv_weights(m, norm)
        last = norm if norm is not None else concat
        stem = f"{concat.output[0]}__single_conv"
        model.graph.initializer.extend([numpy_helper.from_array(weight, f"{stem}_weight"),
                                        numpy_helper.from_array(bias, f"{stem}_bias")])
        added[id(last)] = helper.make_node(
            "Conv", [m.first.input[0], f"{stem}_weight", f"{stem}_bias"], [last.output[0]], name=stem,
            kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1])
        removed.update([id(m.first), id(m.second), id(m.pad), id(concat), id(last), *graph.shift_chain(m)])
    if added:
        replace_nodes(model, [added.get(id(n), n) for n in all_nodes if id(n) in added or id(n) not in removed])
        del model.graph.value_info[:]
        drop_unused_initializers(model)
    return len(added)
