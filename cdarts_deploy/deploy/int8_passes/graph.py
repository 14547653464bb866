"""ModelProto helpers shared by the INT8 passes, and the bridge to onnxscript's pattern rewriter."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from onnxscript import ir
from onnxscript.ir.passes.common import RemoveUnusedNodesPass
from onnxscript.rewriter import pattern

#: Name ending of the ``Mul(x, 1)`` nodes the ``private_relu_inputs`` pass inserts.
RELU_COPY_SUFFIX = "__relu_input_copy"


def consumers(model: Any) -> dict[str, list[Any]]:
    """Tensor name -> the nodes reading it, in graph order."""
    found: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def producers(model: Any) -> dict[str, Any]:
    """Tensor name -> the node writing it."""
    return {o: n for n in model.graph.node for o in n.output}


def graph_ends(model: Any) -> set[str]:
    """Names of the graph's inputs and outputs (tensors no pass may rename or absorb)."""
    return {i.name for i in model.graph.input} | {o.name for o in model.graph.output}


def int_attribute(node: Any, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def ints_attributes(node: Any) -> dict[str, list[int]]:
    return {a.name: list(a.ints) for a in node.attribute if a.ints}


def replace_nodes(model: Any, nodes: Sequence[Any]) -> None:
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def drop_unused_initializers(model: Any) -> None:
    used = {name for node in model.graph.node for name in node.input}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def known_shapes(model: Any) -> dict[str, list[int]]:
    """Tensor name -> shape (-1 for a dimension that is not a number, such as a dynamic batch)."""
    shapes = {}
    for info in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = info.type.tensor_type.shape.dim
        if dims:
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    return shapes


def depthwise_convs(model: Any) -> list[str]:
    """Names of the grouped (depthwise) Conv nodes of an ONNX ``ModelProto``."""
    return [n.name for n in model.graph.node if n.op_type == "Conv" and int_attribute(n, "group", 1) > 1]


def relu_of_shared_input(node: Any, readers: dict[str, list[Any]], ends: set[str],
                         op_types: tuple[str, ...] = ("Relu",)) -> bool:
    """A Relu (or another of ``op_types``) whose input has other consumers too, or is a graph input/output
    (the quantizer cannot fold it)."""
    return node.op_type in op_types and (len(readers.get(node.input[0], [])) > 1 or node.input[0] in ends)


def shared_input_relus(model: Any) -> list[str]:
    """Relu and Clip nodes whose input tensor has other consumers too (or is a graph input/output): the ones
    the quantizer must leave alone (a Clip folds into its input's range as a Relu does)."""
    readers, ends = consumers(model), graph_ends(model)
    return [n.name for n in model.graph.node if relu_of_shared_input(n, readers, ends, ("Relu", "Clip"))]


def constant(value: ir.Value | None) -> np.ndarray | None:
    """The array of an initializer or constant value (None for a computed tensor)."""
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def attribute(node: ir.Node, name: str, default: Any) -> Any:
    found = node.attributes.get(name)
    return default if found is None else found.value


def apply_rules(model: Any, rules: Sequence[pattern.RewriteRule]) -> int:
    """Apply onnxscript rewrite rules to ``model`` (a ModelProto) in place; returns how many matches were
    rewritten.  The proto is left untouched when nothing matches."""
    graph = ir.serde.deserialize_model(model)
    count = pattern.RewriteRuleSet(list(rules)).apply_to_model(graph)
    if count:
        RemoveUnusedNodesPass()(graph)  # also drops the initializers only the replaced nodes read
        model.CopyFrom(ir.serde.serialize_model(graph))
    return count
