"""Pass ``pad_depthwise_channels``: depthwise convolutions padded with zero channels to a multiple of 16.

ONNX Runtime's fast symmetric 8-bit depthwise kernel (x86) needs a channel multiple of 16; DARTS cells have
36 or 72.  A graph-level function rather than a pattern: the extra channels must come from the producer of
the depthwise input (or a widening copy shared by every depthwise reader of it) and reach the weights of
every consumer, so each decision reads several nodes that no single match holds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper, numpy_helper

from cdarts_deploy.deploy.int8_passes.graph import (
    RELU_COPY_SUFFIX,
    consumers,
    drop_unused_initializers,
    graph_ends,
    int_attribute,
    producers,
    replace_nodes,
)

#: Channel multiple of ONNX Runtime's fast symmetric 8-bit depthwise kernels (x86).
DEPTHWISE_CHANNEL_ALIGN = 16


class _Padding:
    """The graph's lookups and the edits decided so far."""

    def __init__(self, model: Any, align: int) -> None:
        self.model, self.align = model, align
        self.inits = {t.name: t for t in model.graph.initializer}
        self.readers, self.producer, self.ends = consumers(model), producers(model), graph_ends(model)
        self.widened: dict[str, int] = {}  # tensor -> channels it has after padding
        self.copies: dict[str, Any] = {}  # tensor -> widening copy of it (inserted before its first user)
        self.insert_before: dict[int, Any] = {}  # id of a depthwise convolution -> the widening copy it reads
        self.replaced: dict[int, Any] = {}  # id of a private-copy Mul -> the widening copy taking its place

    def weights(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.inits[name])

    def extend(self, name: str, extra: int, axis: int) -> None:
        array = self.weights(name)
        shape = list(array.shape)
        shape[axis] = extra
        grown = np.concatenate([array, np.zeros(shape, array.dtype)], axis)
        self.inits[name].CopyFrom(numpy_helper.from_array(grown.astype(array.dtype), name))

    def plain_conv(self, node: Any) -> bool:
        return (node is not None and node.op_type == "Conv" and int_attribute(node, "group", 1) == 1
                and node.input[1] in self.inits)

    def shared(self, name: str) -> bool:  # an initializer used by more than one node cannot be resized for one
        return len(self.readers.get(name, [])) != 1

    def extra_channels(self, node: Any) -> int | None:
        """Zero channels to add to a depthwise convolution that can be padded (None: leave it alone)."""
        if node.op_type != "Conv" or node.input[1] not in self.inits or self.shared(node.input[1]):
            return None
        w = self.weights(node.input[1])
        channels, group = w.shape[0], int_attribute(node, "group", 1)
        if group == 1 or group != channels or w.shape[1] != 1 or channels % self.align == 0:
            return None
        users = self.readers.get(node.output[0], [])
        if not users or not all(self.plain_conv(u) and list(u.input).index(node.output[0]) == 0
                                and not self.shared(u.input[1]) for u in users):
            return None
        if len(node.input) > 2 and self.shared(node.input[2]):
            return None
        return -channels % self.align

    def only_padded_readers(self, tensor: str, channels: int) -> bool:
        """Every reader of ``tensor`` is a depthwise convolution padded to ``channels``."""
        return tensor not in self.ends and all(
            (extra := self.extra_channels(r)) is not None and self.weights(r.input[1]).shape[0] + extra == channels
            for r in self.readers.get(tensor, []))

    def widening_copy(self, source: str, output: str, channels: int, extra: int) -> Any:
        """A 1x1 convolution copying ``source`` and appending ``extra`` zero channels: in 8 bits one
        multi-threaded QLinearConv in ONNX Runtime's channels-last layout, where a channel ``Pad`` needs
        layout transposes around it."""
        eye = np.concatenate([np.eye(channels, dtype=np.float32), np.zeros((extra, channels), np.float32)])
        weight, bias = f"{output}__widen_weight", f"{output}__widen_bias"
        self.model.graph.initializer.extend([
            numpy_helper.from_array(eye[:, :, None, None], weight),
            numpy_helper.from_array(np.zeros(channels + extra, np.float32), bias)])
        return helper.make_node("Conv", [source, weight, bias], [output], name=f"{output}__widen")

    def widen_input(self, node: Any, channels: int, extra: int) -> bool:
        """Give the depthwise input ``channels + extra`` channels; False if another padding already widened
        it differently."""
        source = node.input[0]
        if source in self.widened:
            return self.widened[source] == channels + extra
        relu = self.producer.get(source)
        relu = relu if relu is not None and relu.op_type == "Relu" else None
        before = self.producer.get(relu.input[0]) if relu is not None else None
        private = relu is not None and len(self.readers[relu.input[0]]) == 1 and relu.input[0] not in self.ends
        if (private and self.plain_conv(before) and len(before.input) > 2 and not self.shared(before.input[1])
                and not self.shared(before.input[2]) and self.only_padded_readers(source, channels + extra)):
            # Conv -> Relu -> depthwise convolutions only: the Conv computes the extra (zero) channels itself
            self.extend(before.input[1], extra, 0)
            self.extend(before.input[2], extra, 0)
        elif (private and before is not None and before.name.endswith(RELU_COPY_SUFFIX)
              and self.only_padded_readers(source, channels + extra)):
            # x -> private copy -> Relu -> depthwise convolutions only: the widening copy replaces the private copy
            self.replaced[id(before)] = self.widening_copy(before.input[0], before.output[0], channels, extra)
        else:
            self.copies[source] = self.widening_copy(source, f"{source}__channel_padded", channels, extra)
            self.insert_before[id(node)] = self.copies[source]
        self.widened[source] = channels + extra
        return True

    def pad(self, node: Any, channels: int, extra: int) -> None:
        """Zero filters for the depthwise convolution, zero input weights for its readers."""
        if node.input[0] in self.copies:
            node.input[0] = self.copies[node.input[0]].output[0]
        self.extend(node.input[1], extra, 0)
        if len(node.input) > 2:
            self.extend(node.input[2], extra, 0)
        for attribute in node.attribute:
            if attribute.name == "group":
                attribute.i = channels + extra
        for user in self.readers[node.output[0]]:
            self.extend(user.input[1], extra, 1)


def pad_depthwise_channels(model: Any, align: int = DEPTHWISE_CHANNEL_ALIGN) -> int:
    """Pad depthwise convolutions to a multiple of ``align`` channels, in place; returns how many were padded.

    Only a depthwise convolution whose every consumer is a plain (group 1) convolution reading it is padded:
    it gets zero filters, those consumers zero input weights, so the outputs are unchanged.  Its input gets
    the extra channels from the convolution producing it (zero filters, when the only path is
    Conv -> Relu -> depthwise convolutions), or else from a widening copy (a 1x1 convolution appending zero
    channels), which also takes the place of a private Relu input copy when only such depthwise convolutions
    read that Relu.  Shape annotations are dropped (the quantizer infers them again).
    """
    padding = _Padding(model, align)
    all_nodes = list(model.graph.node)  # held, so that id() names each node for the whole rewrite
    count = 0
    for node in all_nodes:
        extra = padding.extra_channels(node)
        if extra is None:
            continue
        channels = padding.weights(node.input[1]).shape[0]
        if not padding.widen_input(node, channels, extra):
            continue
        padding.pad(node, channels, extra)
        count += 1
    if count:
        nodes = []
        for node in all_nodes:
            if id(node) in padding.insert_before:
                nodes.append(padding.insert_before[id(node)])
            nodes.append(padding.replaced.get(id(node), node))
        replace_nodes(model, nodes)
        del model.graph.value_info[:]
        drop_unused_initializers(model)
    return count
