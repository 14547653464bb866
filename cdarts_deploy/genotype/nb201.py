"""The nb201 kind (NAS-Bench-201 space): the benchmark's architecture string and ``nb201`` documents.

A NAS-Bench-201 cell has 4 nodes; node ``i`` (1..3) sums one operation applied to each earlier
node, so the 6 edges are written in the benchmark's own text, node by node::

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|

``none`` is a real choice here (the benchmark keeps it after discretisation), unlike in the DARTS
cell kind.  A document carries that text as ``arch``, optionally the benchmark ``index`` and the
network hints (classes, input side, width C, cells per stage N).
"""

from __future__ import annotations

from typing import Any

from cdarts_deploy.genotype import limits
from cdarts_deploy.genotype.errors import GenotypeError, json_preview, repr_preview
from cdarts_deploy.genotype.fields import bounded_int, check_keys, network_hints, optional_text
from cdarts_deploy.genotype.model import Nb201Genotype, Nb201Network

#: Operations of an edge, in the benchmark's order.
NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: Nodes after the cell input (node 0); node i reads nodes 0 .. i-1.
NB201_NODES = 3
#: Architectures of the space: 5 operations on 6 edges.
NB201_ARCHS = len(NB201_OPS) ** (NB201_NODES * (NB201_NODES + 1) // 2)
#: The benchmark's network: 10 classes (CIFAR-10), 32 px, C=16, N=5 cells per stage.
NB201_DEFAULTS: dict[str, int] = dict(num_classes=10, input_size=32, width=16, cells=5)

NB201_DOC_KEYS = ("format", "version", "kind", "name", "description", "arch", "index", "network")
FORMAT_HINT = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"

_HINT_BOUNDS = {
    "num_classes": (1, limits.MAX_CLASSES),
    "input_size": (limits.MIN_INPUT_SIZE, limits.MAX_INPUT_SIZE),
    "width": (1, limits.MAX_WIDTH),
    "cells": (1, limits.MAX_CELLS),
}


def looks_like_nb201_string(text: str) -> bool:
    return text.lstrip().startswith("|")


def parse_nb201_string(text: Any, location: str = "arch", source: str = "<genotype>") -> tuple[tuple[str, ...], ...]:
    """The operations per node of a benchmark string; one :class:`GenotypeError` names the first mistake."""
    if not isinstance(text, str):
        raise GenotypeError(f"found {json_preview(text)}, expected a benchmark string {FORMAT_HINT}", location, source)
    if len(text) > limits.MAX_ARCH_STRING_CHARS:
        raise GenotypeError(f"found a string of {len(text)} characters, expected at most "
                            f"{limits.MAX_ARCH_STRING_CHARS}", location, source)
    text = text.strip()
    parts = text.split("+")
    if len(parts) != NB201_NODES:
        raise GenotypeError(f"found {len(parts)} node(s) separated by '+', expected {NB201_NODES} ({FORMAT_HINT})",
                            location, source)
    nodes = []
    for i, part in enumerate(parts):
        node_loc = f"{location} node {i + 1}"
        if len(part) < 2 or not (part.startswith("|") and part.endswith("|")):
            raise GenotypeError(f"found {repr_preview(part)}, expected |op~0|...| between '+'", node_loc, source)
        edges = part[1:-1].split("|")
        if len(edges) != i + 1:
            raise GenotypeError(f"found {len(edges)} edge(s), expected {i + 1} (one from each of nodes 0..{i})",
                                node_loc, source)
        ops = []
        for j, edge in enumerate(edges):
            op, sep, src = edge.partition("~")
            edge_loc = f"{node_loc} edge {j}"
            if not sep:
                raise GenotypeError(f"found {repr_preview(edge)}, expected operation~{j}", edge_loc, source)
            if op not in NB201_OPS:
                raise GenotypeError(f"found operation {repr_preview(op)}, expected one of " + ", ".join(NB201_OPS),
                                    edge_loc, source)
            if src != str(j):
                raise GenotypeError(f"found input {repr_preview(src)}, expected {j} (edges are written from node 0 "
                                    "upwards)", edge_loc, source)
            ops.append(op)
        nodes.append(tuple(ops))
    return tuple(nodes)


def nb201_from_string(text: str, source: str = "<genotype>", name: str | None = None,
                      index: int | None = None) -> Nb201Genotype:
    """A genotype from the benchmark's text."""
    return Nb201Genotype(nodes=parse_nb201_string(text, "arch", source), name=name, index=index)


def nb201_from_dict(doc: dict, src: str) -> Nb201Genotype:
    """Validate a ``"kind": "nb201"`` document (its format and version already checked)."""
    check_keys(doc, NB201_DOC_KEYS, "", src)
    if "arch" not in doc:
        raise GenotypeError(f"missing 'arch', the benchmark string {FORMAT_HINT}", "arch", src)
    nodes = parse_nb201_string(doc["arch"], "arch", src)
    index = doc.get("index")
    if index is not None:
        bounded_int(index, 0, NB201_ARCHS - 1, "index", src, "index")
    return Nb201Genotype(
        nodes=nodes,
        network=network_hints(doc.get("network", {}), Nb201Network, _HINT_BOUNDS, src),
        name=optional_text(doc, "name", limits.MAX_NAME_CHARS, src),
        description=optional_text(doc, "description", limits.MAX_DESCRIPTION_CHARS, src),
        index=index,
    )


def nb201_to_dict(g: Nb201Genotype) -> dict[str, Any]:
    """The body of an nb201 document: ``arch`` and, when known, ``index``."""
    doc: dict[str, Any] = {"arch": g.arch_string()}
    if g.index is not None:
        doc["index"] = g.index
    return doc
