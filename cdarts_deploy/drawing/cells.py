"""DARTS cells drawn the way the original DARTS plots (graphviz dot) look: boxes for nodes, left to right
in node order (inputs c_{k-2}, c_{k-1}, intermediate nodes 0, 1, ..., output c_{k}), the operation
named on every edge.

Edge labels are placed one by one at the first point along their edge whose box touches no node and
no label placed before (measured with the renderer), so no label hides a node or another label.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Sequence

from matplotlib.patches import FancyArrowPatch

from cdarts_deploy.drawing.figures import FORMATS, pyplot, save_figure, save_formats
from cdarts_deploy.genotype import Cell, CellGenotype

#: One colour per operation so that a cell can be read at a glance.
OP_COLOURS = {
    "sep_conv_3x3": "#9ecae1",
    "sep_conv_5x5": "#4292c6",
    "dil_conv_3x3": "#a1d99b",
    "dil_conv_5x5": "#41ab5d",
    "max_pool_3x3": "#fdae6b",
    "avg_pool_3x3": "#fdd0a2",
    "skip_connect": "#d9d9d9",
}
IO_COLOUR = "#fee391"  # graphviz "darkseagreen2"-like fill for the cell's inputs and output
NODE_COLOUR = "#d9e7f5"

GAP = 3.0  # horizontal distance between node columns (data units)
INPUT_Y = 1.6  # the two cell inputs sit above and below the row of intermediate nodes
INCH_PER_UNIT = 0.62
NODE_FONT, LABEL_FONT = 10, 8
NODE_PAD, LABEL_PAD = 0.35, 0.25  # box padding as a fraction of the font size (matplotlib boxstyle pad)
#: Points along an edge (Bezier parameter) tried for its label, middle first.
LABEL_TS = (0.5, 0.42, 0.58, 0.34, 0.66, 0.27, 0.73, 0.2, 0.8)
#: Perpendicular shifts (data units) tried when no point on the edge itself is free.
LABEL_SHIFTS = (0.0, 0.35, -0.35, 0.7, -0.7, 1.05, -1.05)

Node = Hashable  # 0, 1: cell inputs; 2..: intermediate nodes (genotype indices); "out": the cell output


def node_depths(cell: Cell) -> dict[int, int]:
    """Longest path (in edges) from the cell inputs to every node; inputs have depth 0."""
    depth = {0: 0, 1: 0}
    for i, edges in enumerate(cell.nodes):
        depth[i + 2] = 1 + max(depth[src] for _, src in edges)
    return depth


def node_names(cell: Cell) -> dict[Node, str]:
    """Display names: c_{k-2}, c_{k-1}, intermediate nodes from 0, c_{k}."""
    names: dict[Node, str] = {0: "$c_{k-2}$", 1: "$c_{k-1}$", "out": "$c_{k}$"}
    names.update({i + 2: str(i) for i in range(len(cell.nodes))})
    return names


def cell_layout(cell: Cell) -> dict[Node, tuple[float, float]]:
    """Positions: inputs at the left, intermediate nodes one column each in node order, the output at the right."""
    pos: dict[Node, tuple[float, float]] = {0: (0.0, INPUT_Y), 1: (0.0, -INPUT_Y)}
    for i in range(len(cell.nodes)):
        pos[i + 2] = (GAP * (i + 1), 0.0)
    pos["out"] = (GAP * (len(cell.nodes) + 1), 0.0)
    return pos


@dataclass(frozen=True)
class Edge:
    src: Node
    dst: Node
    op: str | None  # None: an unlabelled edge into the output
    rad: float  # matplotlib arc3 curvature: < 0 bulges above a left-to-right edge, > 0 below


def _rad_for_bulge(p: tuple[float, float], q: tuple[float, float], bulge: float) -> float:
    """arc3 curvature whose curve passes ``bulge`` units off the chord at its middle (the control point is
    twice as far)."""
    length = ((q[0] - p[0]) ** 2 + (q[1] - p[1]) ** 2) ** 0.5
    return 2.0 * bulge / length if length else 0.0


def cell_edges(cell: Cell, pos: dict[Node, tuple[float, float]]) -> list[Edge]:
    """Every edge with its curvature: edges that pass other nodes arc around them."""
    edges: list[Edge] = []
    above = True
    for i, node_edges in enumerate(cell.nodes):
        dst = i + 2
        for op, src in node_edges:
            if src in (0, 1):
                # from c_{k-2} (top) arc upwards, from c_{k-1} (bottom) downwards, more for farther nodes
                bulge = 0.42 * i
                rad = _rad_for_bulge(pos[src], pos[dst], bulge) * (-1 if src == 0 else 1)
            elif dst - src == 1:
                rad = 0.0
            else:
                rad = _rad_for_bulge(pos[src], pos[dst], 0.75 + 0.3 * (dst - src - 2)) * (-1 if above else 1)
                above = not above
            edges.append(Edge(src, dst, op, rad))
    last = len(cell.nodes) + 1
    side = 1
    for node in cell.concat:
        if node == last:
            rad = 0.0
        else:
            rad = _rad_for_bulge(pos[node], pos["out"], 0.55 + 0.3 * (last - node - 1)) * side
            side = -side
        edges.append(Edge(node, "out", None, rad))
    return edges


def curve_point(p: tuple[float, float], q: tuple[float, float], rad: float, t: float) -> tuple[float, float]:
    """The point at parameter ``t`` of matplotlib's arc3 quadratic Bezier from ``p`` to ``q``."""
    (x1, y1), (x2, y2) = p, q
    cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
    return ((1 - t) ** 2 * x1 + 2 * t * (1 - t) * cx + t**2 * x2,
            (1 - t) ** 2 * y1 + 2 * t * (1 - t) * cy + t**2 * y2)


def _curve_normal(p: tuple[float, float], q: tuple[float, float], rad: float, t: float) -> tuple[float, float]:
    (x1, y1), (x2, y2) = p, q
    cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
    dx = 2 * (1 - t) * (cx - x1) + 2 * t * (x2 - cx)
    dy = 2 * (1 - t) * (cy - y1) + 2 * t * (y2 - cy)
    norm = (dx * dx + dy * dy) ** 0.5 or 1.0
    return -dy / norm, dx / norm


def _extent(text: Any, renderer: Any, pad: float, fontsize: float) -> Any:
    """Display box of a text with its bbox patch (matplotlib pads the text by ``pad`` x font size)."""
    grow = pad * renderer.points_to_pixels(fontsize) + 1.5
    return text.get_window_extent(renderer).padded(grow)


def _overlaps(box: Any, others: Sequence[Any]) -> float:
    """Total overlap area (pixels squared) of ``box`` with ``others``."""
    total = 0.0
    for other in others:
        w = min(box.x1, other.x1) - max(box.x0, other.x0)
        h = min(box.y1, other.y1) - max(box.y0, other.y0)
        if w > 0 and h > 0:
            total += w * h
    return total


@dataclass
class CellDrawing:
    """The artists of one drawn cell, for tests and for callers that add to the axes."""

    nodes: dict[Node, Any]
    labels: list[Any]


def draw_cell(ax: Any, cell: Cell, title: str = "") -> CellDrawing:
    """Draw ``cell`` into ``ax`` (which should keep equal x and y scales); returns the node and label texts."""
    pos = cell_layout(cell)
    names = node_names(cell)
    edges = cell_edges(cell, pos)
    ax.axis("off")
    for e in edges:
        ax.add_patch(FancyArrowPatch(
            pos[e.src], pos[e.dst], connectionstyle=f"arc3,rad={e.rad}", arrowstyle="-|>", mutation_scale=11,
            shrinkA=14, shrinkB=14, linestyle="--" if e.op is None else "-", color="#555555",
            linewidth=1.0, zorder=1,
        ))
    nodes = {}
    for node, (x, y) in pos.items():
        is_io = node in (0, 1, "out")
        nodes[node] = ax.text(x, y, names[node], ha="center", va="center", fontsize=NODE_FONT, zorder=4,
                              bbox=dict(boxstyle=f"round,pad={NODE_PAD}", fc=IO_COLOUR if is_io else NODE_COLOUR,
                                        ec="#333333", lw=1.0))
    if title:
        ax.set_title(title, fontsize=NODE_FONT)
    renderer = ax.figure.canvas.get_renderer()
    ax.apply_aspect()
    blocked = [_extent(t, renderer, NODE_PAD, NODE_FONT) for t in nodes.values()]
    frame = ax.get_window_extent(renderer)
    labels = []
    for e in edges:
        if e.op is None:
            continue
        label = ax.text(0, 0, e.op, ha="center", va="center", fontsize=LABEL_FONT, zorder=3,
                        bbox=dict(boxstyle=f"round,pad={LABEL_PAD}", fc=OP_COLOURS.get(e.op, "white"), ec="none"))
        box = _place(label, e, pos, renderer, blocked, frame)
        blocked.append(box)
        labels.append(label)
    return CellDrawing(nodes, labels)


def _place(label: Any, e: Edge, pos: dict, renderer: Any, blocked: list, frame: Any) -> Any:
    """Move ``label`` to the first free candidate point of its edge; returns its display box."""
    best = None
    for shift in LABEL_SHIFTS:
        for t in LABEL_TS:
            x, y = curve_point(pos[e.src], pos[e.dst], e.rad, t)
            if shift:
                nx, ny = _curve_normal(pos[e.src], pos[e.dst], e.rad, t)
                x, y = x + shift * nx, y + shift * ny
            label.set_position((x, y))
            box = _extent(label, renderer, LABEL_PAD, LABEL_FONT)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            cost = _overlaps(box, blocked) + (0.0 if inside else 1e9)
            if cost == 0.0:
                return box
            if best is None or cost < best[0]:
                best = (cost, (x, y), box)
    label.set_position(best[1])  # nothing free: the least covered point
    return best[2]


def cell_figure(cell: Cell, title: str = "") -> tuple[Any, CellDrawing]:
    """A figure holding one cell at a fixed scale (equal units in x and y)."""
    plt = pyplot()
    pos = cell_layout(cell)
    xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
    x0, x1 = min(xs) - 1.2, max(xs) + 1.2
    y0, y1 = min(ys) - 2.0, max(ys) + 2.0
    fig = plt.figure(figsize=((x1 - x0) * INCH_PER_UNIT, (y1 - y0) * INCH_PER_UNIT + (0.35 if title else 0)))
    top = 1 - 0.35 / fig.get_figheight() if title else 1.0
    ax = fig.add_axes((0.0, 0.0, 1.0, top))
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    return fig, draw_cell(ax, cell, title)


def plot_cell(cell: Cell, stem: str | os.PathLike, title: str = "", formats: Sequence[str] = FORMATS) -> list[Path]:
    """Draw one cell: ``stem.png`` and ``stem.svg``; returns the files written."""
    fig, _ = cell_figure(cell, title)
    try:
        return save_formats(fig, Path(stem), formats)
    finally:
        pyplot().close(fig)


def distinct_cells(g: CellGenotype) -> list[tuple[str, Cell]]:
    """``(label, cell)`` for every distinct cell; a cell shared by all stages appears once."""
    out: list[tuple[str, Cell]] = []
    seen: dict[Cell, str] = {}
    shared = len(set(g.stages)) == 1
    for i, stage in enumerate(g.stages):
        for kind, cell in (("normal", stage.normal), ("reduce", stage.reduce)):
            if cell in seen:
                continue
            label = kind if shared else f"stage{i}_{kind}"
            seen[cell] = label
            out.append((label, cell))
    return out


def draw_genotype(genotype: CellGenotype, path: str | os.PathLike) -> Path:
    """One PNG at ``path`` with every stage's normal and reduction cell (written atomically)."""
    plt = pyplot()
    rows = len(genotype.stages)
    probe = genotype.stages[0].normal
    pos = cell_layout(probe)
    width = (max(p[0] for p in pos.values()) + 2.4) * INCH_PER_UNIT
    height = (2 * INPUT_Y + 4.0) * INCH_PER_UNIT + 0.35
    fig = plt.figure(figsize=(2 * width, rows * height))
    try:
        for s, stage in enumerate(genotype.stages):
            prefix = f"stage {s} " if rows > 1 else ""
            for col, (cell, kind) in enumerate(((stage.normal, "normal cell"), (stage.reduce, "reduction cell"))):
                cell_pos = cell_layout(cell)
                xs, ys = [p[0] for p in cell_pos.values()], [p[1] for p in cell_pos.values()]
                ax = fig.add_axes((col / 2, 1 - (s + 1) / rows, 0.5, (height - 0.35) / height / rows))
                ax.set_xlim(min(xs) - 1.2, max(xs) + 1.2)
                ax.set_ylim(min(ys) - 2.0, max(ys) + 2.0)
                ax.set_aspect("equal")
                draw_cell(ax, cell, prefix + kind)
        return save_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)
