"""Rewrites of a float ONNX graph that let ONNX Runtime's CPU kernels run more of it in 8 bits.

Each rewrite leaves the float results unchanged (up to rounding) and is applied to the graph ONNX Runtime
has already optimised (BatchNorm folded) just before static quantization.  They exist because of how the
quantizer and the 8-bit kernels behave:

* the quantizer folds a Relu into its input's range, which is only right when the Relu is that tensor's
  sole consumer (:func:`private_relu_inputs`);
* the fast 8-bit depthwise kernel needs a channel multiple of 16 (:func:`pad_depthwise_channels`);
* there is no 8-bit Slice or ReduceMean, and a BatchNormalization after a Concat is not folded
  (:func:`factorized_reductions_as_single_convs`, :func:`spatial_means_to_global_pools`);
* the 8-bit average pool is slow at large batches (:func:`average_pools_as_depthwise_convs`, used on request:
  its replacement is slower at batch 1);
* there is no 8-bit HardSigmoid, so a squeeze-excitation gate went back to float and forth for three tiny ops
  per block (:func:`hard_sigmoids_into_convs`);
* the 8-bit Mul broadcasting a per-channel gate over a channels-last tensor takes one short span per pixel
  (:func:`broadcast_gates` before quantization, :func:`tile_gates_along_width` after it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Name ending of the ``Mul(x, 1)`` nodes :func:`private_relu_inputs` inserts.
RELU_COPY_SUFFIX = "__relu_input_copy"
#: Channel multiple of ONNX Runtime's fast symmetric 8-bit depthwise kernels (x86).
DEPTHWISE_CHANNEL_ALIGN = 16


def depthwise_convs(model: Any) -> list[str]:
    """Names of the grouped (depthwise) Conv nodes of an ONNX ``ModelProto``."""
    return [n.name for n in model.graph.node
            if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)]


def _consumers(model: Any) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def _graph_ends(model: Any) -> set[str]:
    return {i.name for i in model.graph.input} | {o.name for o in model.graph.output}


def _relu_of_shared_input(node: Any, consumers: dict[str, list[Any]], ends: set[str],
                          op_types: tuple[str, ...] = ("Relu",)) -> bool:
    """A Relu (or another of ``op_types``) whose input has other consumers too, or is a graph input/output
    (the quantizer cannot fold it)."""
    return node.op_type in op_types and (len(consumers.get(node.input[0], [])) > 1 or node.input[0] in ends)


def shared_input_relus(model: Any) -> list[str]:
    """Relu and Clip nodes whose input tensor has other consumers too (or is a graph input/output): the ones
    the quantizer must leave alone (a Clip folds into its input's range as a Relu does)."""
    consumers, ends = _consumers(model), _graph_ends(model)
    return [n.name for n in model.graph.node if _relu_of_shared_input(n, consumers, ends, ("Relu", "Clip"))]


def _int_attribute(node: Any, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def private_relu_inputs(model: Any) -> int:
    """Give every Relu whose input has other consumers (or is a graph input/output) a private copy of that
    input, ``Mul(x, 1)``, in place; returns the number of copies.

    Several Relus of one tensor become one first (their readers read the first's output).  After this every
    Relu is its input's sole consumer, which is what lets the quantizer fold it into the range of that input
    (see :data:`ORT_INT8_OP_TYPES`).
    """
    import onnx
    from onnx import numpy_helper

    fixed = _graph_ends(model)
    first_relu: dict[str, str] = {}
    renamed: dict[str, str] = {}
    kept = []
    for node in model.graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        if node.op_type == "Relu" and node.output[0] not in fixed:
            if node.input[0] in first_relu:
                renamed[node.output[0]] = first_relu[node.input[0]]
                continue
            first_relu[node.input[0]] = node.output[0]
        kept.append(node)
    if renamed:
        del model.graph.node[:]
        model.graph.node.extend(kept)

    consumers = _consumers(model)
    one = "relu_private_copy_one"
    copies: dict[str, str] = {}
    nodes = []
    for node in model.graph.node:
        if _relu_of_shared_input(node, consumers, fixed):
            source = node.input[0]
            if source not in copies:
                copies[source] = f"{source}__relu_input"
                nodes.append(onnx.helper.make_node("Mul", [source, one], [copies[source]],
                                                   name=f"{source}{RELU_COPY_SUFFIX}"))
            node.input[0] = copies[source]
        nodes.append(node)
    if copies:
        model.graph.initializer.append(numpy_helper.from_array(np.ones((), np.float32), one))
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return len(copies)


def pad_depthwise_channels(model: Any, align: int = DEPTHWISE_CHANNEL_ALIGN) -> int:
    """Pad depthwise convolutions to a multiple of ``align`` channels, in place; returns how many were padded.

    Only a depthwise convolution whose every consumer is a plain (group 1) convolution reading it is padded:
    it gets zero filters, those consumers zero input weights, so the outputs are unchanged.  Its input gets
    the extra channels from the convolution producing it (zero filters, when the only path is
    Conv -> Relu -> depthwise convolutions), or else from a widening copy (a 1x1 convolution appending zero
    channels), which also takes the place of a private Relu input copy (:func:`private_relu_inputs`) when
    only such depthwise convolutions read that Relu.  Shape annotations are dropped (the quantizer infers
    them again).
    """
    import onnx
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    consumers = _consumers(model)
    producer = {o: n for n in model.graph.node for o in n.output}

    def weights(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name])

    def set_weights(name: str, array: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(array.astype(weights(name).dtype), name))

    def extend(name: str, extra: int, axis: int) -> None:
        array = weights(name)
        shape = list(array.shape)
        shape[axis] = extra
        set_weights(name, np.concatenate([array, np.zeros(shape, array.dtype)], axis))

    def plain_conv(node: Any) -> bool:
        return (node is not None and node.op_type == "Conv" and _int_attribute(node, "group", 1) == 1
                and node.input[1] in inits)

    def shared(name: str) -> bool:  # an initializer used by more than one node cannot be resized for one
        return len(consumers.get(name, [])) != 1

    def extra_channels(node: Any) -> int | None:
        """Zero channels to add to a depthwise convolution that can be padded (None: leave it alone)."""
        if node.op_type != "Conv" or node.input[1] not in inits or shared(node.input[1]):
            return None
        w = weights(node.input[1])
        channels, group = w.shape[0], _int_attribute(node, "group", 1)
        if group == 1 or group != channels or w.shape[1] != 1 or channels % align == 0:
            return None
        users = consumers.get(node.output[0], [])
        if not users or not all(plain_conv(u) and list(u.input).index(node.output[0]) == 0
                                and not shared(u.input[1]) for u in users):
            return None
        if len(node.input) > 2 and shared(node.input[2]):
            return None
        return -channels % align

    def only_padded_readers(tensor: str, channels: int) -> bool:
        """Every reader of ``tensor`` is a depthwise convolution padded to ``channels``."""
        readers = consumers.get(tensor, [])
        return tensor not in ends and all(
            extra_channels(r) is not None and weights(r.input[1]).shape[0] + extra_channels(r) == channels
            for r in readers)

    def widening_copy(source: str, output: str, channels: int, extra: int) -> Any:
        """A 1x1 convolution copying ``source`` and appending ``extra`` zero channels.  In 8 bits it is one
        multi-threaded QLinearConv in ONNX Runtime's channels-last layout; a channel ``Pad`` measured 2-3x
        slower there, plus layout transposes around it."""
        eye = np.concatenate([np.eye(channels, dtype=np.float32), np.zeros((extra, channels), np.float32)])
        weight, bias = f"{output}__widen_weight", f"{output}__widen_bias"
        model.graph.initializer.extend([numpy_helper.from_array(eye[:, :, None, None], weight),
                                        numpy_helper.from_array(np.zeros(channels + extra, np.float32), bias)])
        return onnx.helper.make_node("Conv", [source, weight, bias], [output], name=f"{output}__widen")

    ends = _graph_ends(model)
    widened: dict[str, int] = {}  # tensor -> channels it has after padding
    copies: dict[str, Any] = {}  # tensor -> widening copy of it (inserted before its first user)
    insert_before: dict[int, Any] = {}  # id of a depthwise convolution -> the widening copy it reads
    replaced: dict[int, Any] = {}  # id of a private-copy Mul -> the widening copy taking its place
    all_nodes = list(model.graph.node)  # held, so that id() names each node for the whole rewrite
    count = 0
    for node in all_nodes:
        extra = extra_channels(node)
        if extra is None:
            continue
        channels = weights(node.input[1]).shape[0]
        source = node.input[0]
        relu = producer.get(source)
        relu = relu if relu is not None and relu.op_type == "Relu" else None
        before = producer.get(relu.input[0]) if relu is not None else None
        private = relu is not None and len(consumers[relu.input[0]]) == 1 and relu.input[0] not in ends
        if source in widened:
            if widened[source] != channels + extra:
                continue
        elif (private and plain_conv(before) and len(before.input) > 2 and not shared(before.input[1])
              and not shared(before.input[2]) and only_padded_readers(source, channels + extra)):
            # Conv -> Relu -> depthwise convolutions only: the Conv computes the extra (zero) channels itself
            extend(before.input[1], extra, 0)
            extend(before.input[2], extra, 0)
            widened[source] = channels + extra
        elif (private and before is not None and before.name.endswith(RELU_COPY_SUFFIX)
              and only_padded_readers(source, channels + extra)):
            # x -> private copy -> Relu -> depthwise convolutions only: the widening copy replaces the private copy
            replaced[id(before)] = widening_copy(before.input[0], before.output[0], channels, extra)
            widened[source] = channels + extra
        else:
            copies[source] = widening_copy(source, f"{source}__channel_padded", channels, extra)
            insert_before[id(node)] = copies[source]
            widened[source] = channels + extra
        if source in copies:
            node.input[0] = copies[source].output[0]
        extend(node.input[1], extra, 0)
        if len(node.input) > 2:
            extend(node.input[2], extra, 0)
        for attribute in node.attribute:
            if attribute.name == "group":
                attribute.i = channels + extra
        for user in consumers[node.output[0]]:
            extend(user.input[1], extra, 1)
        count += 1
    if count:
        nodes = []
        for node in all_nodes:
            if id(node) in insert_before:
                nodes.append(insert_before[id(node)])
            nodes.append(replaced.get(id(node), node))
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        del model.graph.value_info[:]
        _drop_unused_initializers(model)
    return count


def factorized_reductions_as_single_convs(model: Any) -> int:
    """Turn each factorized reduction into one convolution, in place; returns how many.

    A factorized reduction concatenates two 1x1 stride-2 convolutions of one tensor, the second read through
    a one-pixel shift (``Slice`` from 1 on height and width, then a ``Pad`` of one zero row and column at the
    far edge), usually followed by a BatchNormalization.  That is exactly one 2x2 stride-2 convolution with
    the far edge padded: the first half of its filters holds the first convolution's weights at the top-left
    tap, the second half the second's at the bottom-right tap, zeros elsewhere; the BatchNormalization is
    folded into it.  In 8 bits the pair was a float island (ONNX Runtime has no 8-bit Slice, and a
    BatchNormalization after a Concat is not folded) with layout transposes around it; the single
    convolution is one QLinearConv.
    """
    import onnx
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    consumers = _consumers(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    ends = _graph_ends(model)

    def array(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(inits[name]) if name in inits else None

    def only_reader(tensor: str) -> Any | None:
        readers = consumers.get(tensor, [])
        return readers[0] if len(readers) == 1 and tensor not in ends else None

    def strided_pointwise(node: Any) -> bool:
        if node is None or node.op_type != "Conv" or array(node.input[1]) is None:
            return False
        ints = {a.name: list(a.ints) for a in node.attribute if a.ints}
        return (array(node.input[1]).shape[2:] == (1, 1) and _int_attribute(node, "group", 1) == 1
                and ints.get("strides") == [2, 2] and not any(ints.get("pads", [0])) and
                ints.get("dilations", [1, 1]) == [1, 1] and (len(node.input) < 3 or array(node.input[2]) is not None))

    def shifted_source(tensor: str) -> str | None:
        """The tensor that Slice nodes shift by one pixel on height and width to give ``tensor``."""
        starts: dict[int, int] = {}
        node = producer.get(tensor)
        while node is not None and node.op_type == "Slice" and len(node.input) >= 4:
            begin, stop, axes = (array(n) for n in node.input[1:4])
            steps = array(node.input[4]) if len(node.input) > 4 and node.input[4] else np.ones_like(begin)
            if any(a is None for a in (begin, stop, axes, steps)) or (steps != 1).any() or (stop < 2**31).any():
                return None
            for axis, start in zip(axes.ravel(), begin.ravel()):
                starts[int(axis) % 4] = starts.get(int(axis) % 4, 0) + int(start)
            tensor = node.input[0]
            node = producer.get(tensor) if only_reader(node.output[0]) else None
        return tensor if starts == {2: 1, 3: 1} else None

    all_nodes = list(model.graph.node)  # held, so that id() names each node for the whole rewrite
    removed: set[int] = set()  # ids of the nodes taken out
    added: dict[int, Any] = {}  # id of the node it replaces -> the single convolution
    count = 0
    for concat in all_nodes:
        if concat.op_type != "Concat" or _int_attribute(concat, "axis", 0) != 1 or len(concat.input) != 2:
            continue
        first, second = (producer.get(t) for t in concat.input)
        if not (strided_pointwise(first) and strided_pointwise(second)):
            continue
        if not all(only_reader(t) is concat for t in concat.input):
            continue
        pad = producer.get(second.input[0])
        if pad is None or pad.op_type != "Pad" or only_reader(pad.output[0]) is not second:
            continue
        amounts = array(pad.input[1]) if len(pad.input) > 1 else None
        value = array(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(())
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        if (amounts is None or value is None or mode != b"constant" or float(value.ravel()[0] if value.size else 0)
                or list(amounts.ravel()) != [0, 0, 0, 0, 0, 0, 1, 1]):
            continue
        if shifted_source(pad.input[0]) != first.input[0]:
            continue
        wa, wb = array(first.input[1]), array(second.input[1])
        ca, cb = wa.shape[0], wb.shape[0]
        weight = np.zeros((ca + cb, wa.shape[1], 2, 2), np.float32)
        weight[:ca, :, 0, 0], weight[ca:, :, 1, 1] = wa[:, :, 0, 0], wb[:, :, 0, 0]
        bias = np.concatenate([array(c.input[2]) if len(c.input) > 2 else np.zeros(len(w), np.float32)
                               for c, w in ((first, wa), (second, wb))]).astype(np.float32)
        output, last = concat.output[0], concat
        norm = only_reader(output)
        if norm is not None and norm.op_type == "BatchNormalization" and len(norm.output) == 1 and \
                all(array(t) is not None for t in norm.input[1:5]):
            gamma, beta, mean, var = (array(t).astype(np.float64) for t in norm.input[1:5])
            eps = next((a.f for a in norm.attribute if a.name == "epsilon"), 1e-5)
            scale = gamma / np.sqrt(var + eps)
            weight = (weight * scale[:, None, None, None]).astype(np.float32)
            bias = ((bias - mean) * scale + beta).astype(np.float32)
            output, last = norm.output[0], norm
        stem = f"{concat.output[0]}__single_conv"
        model.graph.initializer.extend([numpy_helper.from_array(weight, f"{stem}_weight"),
                                        numpy_helper.from_array(bias, f"{stem}_bias")])
        added[id(last)] = onnx.helper.make_node(
            "Conv", [first.input[0], f"{stem}_weight", f"{stem}_bias"], [output], name=stem,
            kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1])
        chain, node = [], producer.get(pad.input[0])
        while node is not None and node.op_type == "Slice":  # the shift, back to the source tensor
            chain.append(id(node))
            node = producer.get(node.input[0]) if node.input[0] != first.input[0] else None
        removed.update([id(first), id(second), id(pad), id(concat), id(last), *chain])
        count += 1
    if count:
        nodes = [added.get(id(n), n) for n in all_nodes if id(n) in added or id(n) not in removed]
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        del model.graph.value_info[:]
        _drop_unused_initializers(model)
    return count


def _drop_unused_initializers(model: Any) -> None:
    used = {name for node in model.graph.node for name in node.input}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def _known_shapes(model: Any) -> dict[str, list[int]]:
    """Tensor name -> shape (-1 for a dimension that is not a number, such as a dynamic batch)."""
    shapes = {}
    for info in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = info.type.tensor_type.shape.dim
        if dims:
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    return shapes


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


def average_pools_as_depthwise_convs(model: Any) -> dict[str, float]:
    """Turn each 2-D ``AveragePool`` into a depthwise convolution with equal weights, in place; returns the
    border-correction tensors added, with the 8-bit scale that holds each exactly.

    ONNX Runtime's 8-bit QLinearAveragePool can take longer than an 8-bit depthwise convolution doing the same
    sums, and keeping the pool in float costs layout transposes (measurements: ``docs/results/int8_speed_*``).
    A pool that leaves padded pixels out of its count (``count_include_pad=0``) gets a constant per-position
    factor k*k / count afterwards (a ``Mul``), which needs the spatial size, so only pools whose input
    channels, height and width are known numbers are rewritten, and only where the factors fit 8 bits exactly
    (:func:`exact_uint8_scale`; 1, 1.5 and 2.25 for 3x3 at scale 1/4).
    """
    import onnx
    from onnx import numpy_helper

    shapes = _known_shapes(model)
    all_nodes = list(model.graph.node)  # held, so that id() names each node for the whole rewrite
    corrections: dict[str, float] = {}
    replaced: dict[int, list[Any]] = {}  # id of a pool node -> the nodes taking its place
    for node in all_nodes:
        shape = shapes.get(node.input[0], [])
        if node.op_type != "AveragePool" or len(shape) != 4 or min(shape[1:]) < 1:
            continue
        ints = {a.name: list(a.ints) for a in node.attribute if a.ints}
        if (_int_attribute(node, "ceil_mode", 0) or any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET")
                                                         for a in node.attribute)
                or any(d != 1 for d in ints.get("dilations", [1, 1]))):
            continue
        _, channels, height, width = shape
        kh, kw = ints["kernel_shape"]
        sh, sw = ints.get("strides", [1, 1])
        top, left, bottom, right = ints.get("pads", [0, 0, 0, 0])
        covered = np.pad(np.ones((height, width)), ((top, bottom), (left, right)))
        rows, cols = (covered.shape[0] - kh) // sh + 1, (covered.shape[1] - kw) // sw + 1
        counts = np.array([[covered[i * sh:i * sh + kh, j * sw:j * sw + kw].sum() for j in range(cols)]
                           for i in range(rows)])
        factor = (kh * kw / counts).astype(np.float32)
        exclude_pad = not _int_attribute(node, "count_include_pad", 0) and not np.all(factor == 1)
        scale = exact_uint8_scale(factor) if exclude_pad else None
        if exclude_pad and scale is None:
            continue
        stem = f"{node.output[0]}__as_depthwise"
        model.graph.initializer.extend([
            numpy_helper.from_array(np.full((channels, 1, kh, kw), 1.0 / (kh * kw), np.float32), f"{stem}_weight"),
            numpy_helper.from_array(np.zeros(channels, np.float32), f"{stem}_bias")])
        conv_out = f"{stem}_sums" if exclude_pad else node.output[0]
        nodes = [onnx.helper.make_node("Conv", [node.input[0], f"{stem}_weight", f"{stem}_bias"], [conv_out],
                                       name=stem, group=channels, kernel_shape=[kh, kw], strides=[sh, sw],
                                       pads=[top, left, bottom, right])]
        if exclude_pad:
            name = f"{stem}_count_correction"
            # one factor per channel too: ONNX Runtime's 8-bit Mul broadcasting a [1, 1, H, W] map over the
            # channels-last layout runs a small span per pixel, a full [1, C, H, W] map runs per row
            full = np.broadcast_to(factor, (channels, *factor.shape))[None]
            model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(full), name))
            nodes.append(onnx.helper.make_node("Mul", [conv_out, name], [node.output[0]], name=f"{stem}_correct"))
            corrections[name] = scale
        replaced[id(node)] = nodes
    if replaced:
        nodes = [n for node in all_nodes for n in replaced.get(id(node), [node])]
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return corrections


def spatial_means_to_global_pools(model: Any) -> int:
    """Replace ``ReduceMean`` over height and width (keeping dimensions) with ``GlobalAveragePool``, in place;
    returns how many.  Same result; ONNX Runtime has an 8-bit global pool but no 8-bit ReduceMean, so a
    squeeze-excitation block would otherwise turn its whole input back to float."""
    import onnx
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    count = 0
    for index, node in enumerate(model.graph.node):
        if node.op_type != "ReduceMean" or _int_attribute(node, "keepdims", 1) != 1:
            continue
        axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
        if axes is None and len(node.input) > 1 and node.input[1] in inits:
            axes = [int(a) for a in numpy_helper.to_array(inits[node.input[1]]).ravel()]
        if axes is None or sorted(axes) not in ([2, 3], [-2, -1]):
            continue
        pool = onnx.helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name)
        model.graph.node[index].CopyFrom(pool)
        count += 1
    return count


def hard_sigmoids_into_convs(model: Any) -> int:
    """Fold the affine part of each ``HardSigmoid`` that reads a convolution into that convolution, in place;
    returns how many.

    ``HardSigmoid(y) = clip(alpha * y + beta, 0, 1)``, so ``Conv(W, b) -> HardSigmoid`` becomes
    ``Conv(alpha * W, alpha * b + beta) -> Clip(0, 1)``: the same function.  The quantizer folds a Clip into
    its input's range as it folds a Relu (which needs the convolution's output to have no other reader, as
    checked here), so a squeeze-excitation gate stays in 8 bits instead of a DequantizeLinear -> HardSigmoid
    -> QuantizeLinear island (cdarts_b: 66 nodes fewer).
    """
    import onnx
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    consumers, ends = _consumers(model), _graph_ends(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    count = 0
    for index, node in enumerate(model.graph.node):
        conv = producer.get(node.input[0]) if node.op_type == "HardSigmoid" else None
        if (conv is None or conv.op_type != "Conv" or conv.input[1] not in inits or node.input[0] in ends
                or len(consumers[node.input[0]]) != 1 or (len(conv.input) > 2 and conv.input[2] not in inits)):
            continue
        alpha = next((a.f for a in node.attribute if a.name == "alpha"), 0.2)
        beta = next((a.f for a in node.attribute if a.name == "beta"), 0.5)
        weight = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        bias = (numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if len(conv.input) > 2
                else np.zeros(weight.shape[0]))
        stem = f"{node.output[0]}__folded"
        model.graph.initializer.extend([
            numpy_helper.from_array((weight * alpha).astype(np.float32), f"{stem}_weight"),
            numpy_helper.from_array((bias * alpha + beta).astype(np.float32), f"{stem}_bias"),
            numpy_helper.from_array(np.zeros((), np.float32), f"{stem}_low"),
            numpy_helper.from_array(np.ones((), np.float32), f"{stem}_high")])
        conv.input[:] = [conv.input[0], f"{stem}_weight", f"{stem}_bias"]
        model.graph.node[index].CopyFrom(onnx.helper.make_node(
            "Clip", [node.input[0], f"{stem}_low", f"{stem}_high"], list(node.output), name=node.name))
        count += 1
    if count:
        _drop_unused_initializers(model)
    return count


def broadcast_gates(model: Any) -> dict[str, tuple[int, int]]:
    """The ``Mul`` nodes that scale a [N, C, H, W] tensor (W > 1) by a per-channel [N, C, 1, 1] gate (the
    squeeze-excitation multiply): node name -> (which input is the gate, W).  Read from the shapes of the
    float graph, for :func:`tile_gates_along_width` after quantization."""
    shapes = _known_shapes(model)
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


#: Name ending ONNX Runtime's quantizer gives the operator-format node that replaces a float node.
QUANTIZED_NODE_SUFFIX = "_quant"


def tile_gates_along_width(model: Any, gates: dict[str, tuple[int, int]]) -> int:
    """Repeat the gate of each 8-bit squeeze-excitation multiply (``QLinearMul`` of a node found by
    :func:`broadcast_gates`) along the width before the multiply, in place; returns how many.

    ONNX Runtime runs the quantized network channels-last, where a [N, 1, 1, C] gate broadcast over
    [N, H, W, C] is one call of its 8-bit kernel per pixel (C values each: 16 to 1152 in the chain networks);
    gated by [N, 1, W, C] it is one call per row.  Tiling the few gate bytes costs less than the calls it
    saves (cdarts_b, batch 1, 2 threads: the first block's multiply 240 -> 65 us).  A ``Tile`` on the
    channels-last tensor is one the layout optimizer carries through, unlike ``Expand``, which brought
    transposes back.  The result is the same product.
    """
    import onnx
    from onnx import numpy_helper

    nodes, count = [], 0
    for node in model.graph.node:
        name = node.name[: -len(QUANTIZED_NODE_SUFFIX)] if node.name.endswith(QUANTIZED_NODE_SUFFIX) else None
        if node.op_type == "QLinearMul" and name in gates:
            gate, width = gates[name]
            position = 3 * gate  # QLinearMul inputs: a, a_scale, a_zero_point, b, b_scale, b_zero_point, ...
            repeats, tiled = f"{node.name}__gate_repeats", f"{node.input[position]}__along_width"
            model.graph.initializer.append(numpy_helper.from_array(np.array([1, 1, 1, width], np.int64), repeats))
            nodes.append(onnx.helper.make_node("Tile", [node.input[position], repeats], [tiled],
                                               name=f"{node.name}__tile_gate"))
            node.input[position] = tiled
            count += 1
        nodes.append(node)
    if count:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return count
