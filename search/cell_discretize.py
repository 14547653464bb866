"""Top-k discretization of architecture weights into a :class:`CellGenotype` (as in DARTS and CDARTS).

For each node: score each incoming edge by its largest weight excluding ``none``,
keep the two best edges, and give each the arg-max operation excluding ``none``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cdarts_deploy.genotype import SEARCH_OPS, Cell, CellGenotype, CellNetwork, CellStage

from .cell_supernet import NONE_INDEX, NUM_NODES, edge_weights, node_edge_slices

CONCAT = tuple(range(2, 2 + NUM_NODES))


def discretize_cell(alpha: torch.Tensor, beta: torch.Tensor | None = None, k: int = 2) -> Cell:
    """One cell from ``alpha`` of shape ``[14, 8]`` (and optional edge logits ``beta`` of shape ``[14]``)."""
    with torch.no_grad():
        w = F.softmax(alpha.detach().float().cpu(), dim=-1)
        if beta is not None:
            w = w * edge_weights(beta.detach().float().cpu()).unsqueeze(-1)
        w[:, NONE_INDEX] = -1.0  # never chosen, and never lends an edge its score
        best_w, best_op = w.max(dim=-1)
    nodes = []
    for node_slice in node_edge_slices():
        rows = range(node_slice.start, node_slice.stop)
        # Strongest edges first; ties go to the earlier input so the result is reproducible.
        ranked = sorted(rows, key=lambda r: (-float(best_w[r]), r))[:k]
        nodes.append(tuple((SEARCH_OPS[int(best_op[r])], r - node_slice.start) for r in ranked))
    return Cell(nodes=tuple(nodes), concat=CONCAT)


def discretize(
    alpha_normal: torch.Tensor,
    alpha_reduce: torch.Tensor,
    beta_normal: torch.Tensor | None = None,
    beta_reduce: torch.Tensor | None = None,
    network: CellNetwork | None = None,
    name: str | None = None,
    description: str | None = None,
) -> CellGenotype:
    """A genotype with one stage per row of the ``[stages, 14, 8]`` alpha tensors.

    With 3 stages the last stage's reduction cell is never used by a network
    (two reductions; see :func:`backbones.darts_net.stage_of_cell`); it is written
    as a copy of stage 1's so that the file shows no arbitrary cell.
    """
    num = alpha_normal.shape[0]
    stages = []
    for s in range(num):
        normal = discretize_cell(alpha_normal[s], None if beta_normal is None else beta_normal[s])
        reduce = discretize_cell(alpha_reduce[s], None if beta_reduce is None else beta_reduce[s])
        stages.append(CellStage(normal=normal, reduce=reduce))
    if num == 3:
        stages[2] = CellStage(normal=stages[2].normal, reduce=stages[1].reduce)
    return CellGenotype(stages=tuple(stages), network=network or CellNetwork(), name=name, description=description)


def count_op(genotype: CellGenotype, op: str = "skip_connect", which: str = "normal") -> int:
    """How many edges of the ``which`` cells (over all stages) use ``op``."""
    total = 0
    for st in genotype.stages:
        cell = st.normal if which == "normal" else st.reduce
        total += sum(1 for node in cell.nodes for name, _ in node if name == op)
    return total
