"""Pass ``private_relu_inputs``: every Relu becomes its input's sole consumer.

The quantizer folds a Relu into its input's range (saturation at zero does the Relu), which is only right
when the Relu is that tensor's sole consumer; in DARTS cells a node's output also feeds identity edges and
the cell's concatenation.  A graph-level function rather than a pattern: it merges all Relus of one tensor
and gives them one shared copy, which needs every reader of the tensor at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper, numpy_helper

from cdarts_deploy.deploy.int8_passes.graph import (
    RELU_COPY_SUFFIX,
    consumers,
    graph_ends,
    relu_of_shared_input,
    replace_nodes,
)


def _merge_relus_of_one_tensor(model: Any, fixed: set[str]) -> None:
    """Several Relus of one tensor become the first (their readers read the first's output)."""
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
        replace_nodes(model, kept)


def private_relu_inputs(model: Any) -> int:
    """Give every Relu whose input has other consumers (or is a graph input/output) a private copy of that
    input, ``Mul(x, 1)``, in place; returns the number of copies."""
    fixed = graph_ends(model)
    _merge_relus_of_one_tensor(model, fixed)
    readers = consumers(model)
    one = "relu_private_copy_one"
    copies: dict[str, str] = {}
    nodes = []
    for node in model.graph.node:
        if relu_of_shared_input(node, readers, fixed):
            source = node.input[0]
            if source not in copies:
                copies[source] = f"{source}__relu_input"
                nodes.append(helper.make_node("Mul", [source, one], [copies[source]],
                                              name=f"{source}{RELU_COPY_SUFFIX}"))
            node.input[0] = copies[source]
        nodes.append(node)
    if copies:
        model.graph.initializer.append(numpy_helper.from_array(np.ones((), np.float32), one))
        replace_nodes(model, nodes)
    return len(copies)
