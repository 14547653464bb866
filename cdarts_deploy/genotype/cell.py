"""The cell kind (DARTS space): its vocabulary, layouts, and validation of cells and cell documents.

A cell document lists, per stage, a normal and a reduction cell; each cell gives per intermediate
node two ``[operation, input_index]`` edges, plus the node indices concatenated as the cell output.
"""

from __future__ import annotations

from typing import Any

from cdarts_deploy.genotype import limits
from cdarts_deploy.genotype.errors import GenotypeError, json_preview, repr_preview
from cdarts_deploy.genotype.fields import check_count, check_int, check_keys, network_hints, optional_text
from cdarts_deploy.genotype.model import Cell, CellGenotype, CellNetwork, CellStage

#: Operations a discrete DARTS cell may use (order as in the reference code).
CELL_OPS: tuple[str, ...] = (
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
#: The search vocabulary: the cell operations plus ``none`` (search only).
SEARCH_OPS: tuple[str, ...] = CELL_OPS + ("none",)

LAYOUTS = ("cifar", "imagenet")

#: Width, number of cells, classes and input size of a cell network when neither the caller nor the genotype says
#: (the paper's CIFAR and ImageNet evaluation networks, Sections 4.3-4.4).
LAYOUT_DEFAULTS: dict[str, dict[str, int]] = {
    "cifar": dict(width=36, cells=20, num_classes=10, input_size=32),
    "imagenet": dict(width=48, cells=14, num_classes=1000, input_size=224),
}

CELL_DOC_KEYS = ("format", "version", "kind", "name", "description", "stages", "network")
STAGE_KEYS = ("normal", "normal_concat", "reduce", "reduce_concat")

# Bounds of the network hints: (low, high) per key.
_HINT_BOUNDS = {
    "width": (1, limits.MAX_WIDTH),
    "cells": (1, limits.MAX_CELLS),
    "num_classes": (1, limits.MAX_CLASSES),
    "input_size": (limits.MIN_INPUT_SIZE, limits.MAX_INPUT_SIZE),
}


def parse_cell(nodes: Any, concat: Any, loc: str, src: str) -> Cell:
    """Validate one cell given as lists (``nodes`` of edge pairs, ``concat`` of node indices)."""
    if not isinstance(nodes, (list, tuple)) or not nodes:
        raise GenotypeError(f"found {json_preview(nodes)}, expected a non-empty list of nodes", loc, src)
    check_count(nodes, limits.MAX_NODES_PER_CELL, "nodes", loc, src)
    parsed_nodes = tuple(_parse_node(node, i + 2, f"{loc}[{i}]", src) for i, node in enumerate(nodes))
    return Cell(nodes=parsed_nodes, concat=_parse_concat(concat, len(parsed_nodes) + 1, loc + "_concat", src))


def _parse_node(node: Any, node_id: int, nloc: str, src: str) -> tuple:
    if not isinstance(node, (list, tuple)) or len(node) != 2:
        raise GenotypeError(
            f"found {json_preview(node)}, expected 2 edges [operation, input] into node {node_id}", nloc, src
        )
    edges = []
    for e, edge in enumerate(node):
        eloc = f"{nloc}[{e}]"
        if not isinstance(edge, (list, tuple)) or len(edge) != 2:
            raise GenotypeError(f"found {json_preview(edge)}, expected a pair [operation, input_index]", eloc, src)
        op, inp = edge
        if op == "none":
            raise GenotypeError(
                "found 'none', which exists only during search; expected one of " + ", ".join(CELL_OPS),
                f"{eloc}[0]",
                src,
            )
        if op not in CELL_OPS:
            raise GenotypeError(
                f"found operation {repr_preview(op)}, expected one of " + ", ".join(CELL_OPS), f"{eloc}[0]", src
            )
        check_int(inp, f"{eloc}[1]", src, f"an input index 0..{node_id - 1}")
        if not 0 <= inp < node_id:
            raise GenotypeError(
                f"found input {repr_preview(inp)}, expected 0..{node_id - 1} "
                f"(node {node_id} may read the two cell inputs and earlier nodes)",
                f"{eloc}[1]",
                src,
            )
        edges.append((op, inp))
    if edges[0][1] == edges[1][1]:
        raise GenotypeError(
            f"found two edges from input {edges[0][1]} into node {node_id}, expected distinct inputs", nloc, src
        )
    return tuple(edges)


def _parse_concat(concat: Any, last: int, cloc: str, src: str) -> tuple[int, ...]:
    if not isinstance(concat, (list, tuple)) or not concat:
        raise GenotypeError(f"found {json_preview(concat)}, expected a non-empty list of node indices", cloc, src)
    seen: set[int] = set()
    for k, idx in enumerate(concat):
        check_int(idx, f"{cloc}[{k}]", src, f"a node index 0..{last}")
        if not 0 <= idx <= last:
            raise GenotypeError(f"found node {repr_preview(idx)}, expected 0..{last}", f"{cloc}[{k}]", src)
        if idx in seen:
            raise GenotypeError(f"found node {idx} twice, expected distinct indices", f"{cloc}[{k}]", src)
        seen.add(idx)
    return tuple(concat)


def cell_from_dict(doc: dict, src: str) -> CellGenotype:
    """Validate a ``"kind": "cell"`` document (its format and version already checked)."""
    check_keys(doc, CELL_DOC_KEYS, "", src)
    stages_doc = doc.get("stages")
    if not isinstance(stages_doc, list) or not stages_doc:
        raise GenotypeError(f"found {json_preview(stages_doc)}, expected a non-empty list of stages", "stages", src)
    check_count(stages_doc, limits.MAX_STAGES, "stages", "stages", src)
    stages = tuple(_stage_from_dict(st, f"stages[{i}]", src) for i, st in enumerate(stages_doc))
    return CellGenotype(
        stages=stages,
        network=_network_from_dict(doc.get("network", {}), src),
        name=optional_text(doc, "name", limits.MAX_NAME_CHARS, src),
        description=optional_text(doc, "description", limits.MAX_DESCRIPTION_CHARS, src),
    )


def _stage_from_dict(st: Any, loc: str, src: str) -> CellStage:
    if not isinstance(st, dict):
        raise GenotypeError(f"found {json_preview(st)}, expected an object with normal/reduce cells", loc, src)
    check_keys(st, STAGE_KEYS, "", src)
    for key in STAGE_KEYS:
        if key not in st:
            raise GenotypeError(f"missing {key!r}", f"{loc}.{key}", src)
    return CellStage(
        normal=parse_cell(st["normal"], st["normal_concat"], f"{loc}.normal", src),
        reduce=parse_cell(st["reduce"], st["reduce_concat"], f"{loc}.reduce", src),
    )


def _network_from_dict(net: Any, src: str) -> CellNetwork:
    hints = network_hints(net, CellNetwork, _HINT_BOUNDS, src)
    if hints.layout is not None and hints.layout not in LAYOUTS:
        raise GenotypeError(
            f"found layout {repr_preview(hints.layout)}, expected 'cifar' or 'imagenet'", "network.layout", src
        )
    return hints
