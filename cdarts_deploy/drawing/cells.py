"""Pictures of genotypes: DARTS cells as graphs, chain genotypes as per-stage strips of blocks.

Every picture is written as PNG and SVG, through a temporary file and a rename.

    from cdarts_deploy import genotype, plot
    plot.plot_genotype(genotype.load("cdarts_cifar"), "out/")   # out/cdarts_cifar_normal.png, ..._reduce.svg, ...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from cdarts_deploy.atomic_files import atomic_path
from cdarts_deploy.genotype import Block, Cell, CellGenotype, ChainGenotype, Genotype

FORMATS = ("png", "svg")

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
KERNEL_COLOURS = {1: "#f0f0f0", 3: "#c6dbef", 5: "#6baed6", 7: "#2171b5"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure_atomic(fig: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Save a matplotlib figure via a temporary file in the same folder and a rename (format from the suffix)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **kwargs)
    return path


def _save_all(fig: Any, stem: Path, formats: Sequence[str]) -> list[Path]:
    import matplotlib

    # SVG text stays text (searchable, editable) instead of glyph outlines
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        return [save_figure_atomic(fig, stem.with_name(f"{stem.name}.{fmt}"), dpi=150, bbox_inches="tight")
                for fmt in formats]


# ---------------------------------------------------------------------------
# DARTS cells
# ---------------------------------------------------------------------------


def node_depths(cell: Cell) -> dict[int, int]:
    """Longest path (in edges) from the cell inputs to every node; inputs have depth 0."""
    depth = {0: 0, 1: 0}
    for i, edges in enumerate(cell.nodes):
        depth[i + 2] = 1 + max(depth[src] for _, src in edges)
    return depth


def cell_layout(cell: Cell) -> dict[Any, tuple[float, float]]:
    """Positions: inputs on the left, intermediate nodes in columns by depth, the output on the right."""
    depth = node_depths(cell)
    pos: dict[Any, tuple[float, float]] = {0: (0.0, 1.0), 1: (0.0, -1.0)}
    columns: dict[int, list[int]] = {}
    for node in range(2, len(cell.nodes) + 2):
        columns.setdefault(depth[node], []).append(node)
    for d, nodes in columns.items():
        for k, node in enumerate(nodes):
            y = (len(nodes) - 1) / 2 - k
            pos[node] = (2.2 * d, 1.6 * y)
    pos["out"] = (2.2 * (max(columns) + 1), 0.0)
    return pos


def plot_cell(cell: Cell, stem: str | os.PathLike, title: str = "", formats: Sequence[str] = FORMATS) -> list[Path]:
    """Draw one cell as a graph: ``stem.png`` and ``stem.svg``; returns the files written."""
    plt = _pyplot()
    from matplotlib.patches import FancyArrowPatch

    pos = cell_layout(cell)
    names = {0: "c_{k-2}", 1: "c_{k-1}", "out": "c_{k}"}
    fig, ax = plt.subplots(figsize=(2.4 * len({p[0] for p in pos.values()}) + 1, 4.2))
    ax.set_aspect("equal")
    ax.axis("off")

    def edge(src: Any, dst: Any, label: str | None, rad: float, style: str = "-") -> None:
        (x1, y1), (x2, y2) = pos[src], pos[dst]
        arrow = FancyArrowPatch(
            (x1, y1), (x2, y2), connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>", mutation_scale=12,
            shrinkA=17, shrinkB=17, linestyle=style, color="#444444", linewidth=1.1, zorder=1,
        )
        ax.add_patch(arrow)
        if label:
            # a point of matplotlib's arc3 quadratic Bezier (control point: midpoint + rad * (dy, -dx)),
            # nearer the source than the middle so that labels of crossing edges do not collide
            cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
            t = 0.38
            lx = (1 - t) ** 2 * x1 + 2 * t * (1 - t) * cx + t**2 * x2
            ly = (1 - t) ** 2 * y1 + 2 * t * (1 - t) * cy + t**2 * y2
            ax.text(lx, ly, label, fontsize=7, ha="center", va="center", zorder=3,
                    bbox=dict(boxstyle="round,pad=0.2", fc=OP_COLOURS.get(label, "white"), ec="none"))

    for i, edges in enumerate(cell.nodes):
        dst = i + 2
        for k, (op, src) in enumerate(edges):
            edge(src, dst, op, rad=0.18 if k == 0 else -0.18)
    for node in cell.concat:
        edge(node, "out", None, rad=0.0, style="--")
    for node, (x, y) in pos.items():
        is_io = node in (0, 1, "out")
        ax.scatter([x], [y], s=900, c="#fee391" if is_io else "#ffffff", edgecolors="#333333", zorder=2)
        label = f"${names[node]}$" if is_io else str(node)
        ax.text(x, y, label, ha="center", va="center", fontsize=8, zorder=4)
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 1.0, max(ys) + 1.0)
    if title:
        ax.set_title(title, fontsize=9)
    try:
        return _save_all(fig, Path(stem), formats)
    finally:
        plt.close(fig)


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


# ---------------------------------------------------------------------------
# Chain genotypes
# ---------------------------------------------------------------------------


def expanded_blocks(stage: Sequence[Block]) -> list[Block]:
    """Blocks with repeats spelled out; only the first of a repeated entry keeps its stride."""
    out = []
    for block in stage:
        for r in range(block.repeats):
            out.append(Block(block.type, block.kernel, block.expansion, block.stride if r == 0 else 1,
                             block.out_channels, block.se_ratio, 1))
    return out


def block_label(block: Block) -> str:
    if block.type == "cn":
        return f"conv\nk{block.kernel}"
    head = "ds" if block.type == "ds" else "MB"
    exp = int(block.expansion) if float(block.expansion).is_integer() else block.expansion
    return f"{head} k{block.kernel}\ne{exp}" + ("\nSE" if block.se_ratio else "")


def plot_chain(g: ChainGenotype, stem: str | os.PathLike, title: str = "", formats: Sequence[str] = FORMATS) -> list[Path]:
    """Draw a chain genotype as one row of blocks per stage (kernel by colour, label kernel/expansion)."""
    plt = _pyplot()
    from matplotlib.patches import FancyBboxPatch

    stages = [expanded_blocks(s) for s in g.stages]
    width = max(len(s) for s in stages)
    fig, ax = plt.subplots(figsize=(1.2 * width + 2.2, 0.9 * len(stages) + 0.8))
    ax.axis("off")
    for row, blocks in enumerate(stages):
        y = -row
        ax.text(-0.2, y, f"stage {row}\n{blocks[0].out_channels} ch", ha="right", va="center", fontsize=8)
        for col, block in enumerate(blocks):
            ax.add_patch(FancyBboxPatch(
                (col + 0.05, y - 0.35), 0.9, 0.7, boxstyle="round,pad=0.02",
                fc=KERNEL_COLOURS.get(block.kernel, "white"), ec="#d62728" if block.stride == 2 else "#333333",
                lw=2.0 if block.stride == 2 else 0.8,
            ))
            ax.text(col + 0.5, y, block_label(block), ha="center", va="center", fontsize=7,
                    color="white" if block.kernel == 7 else "black")
    ax.set_xlim(-1.4, width + 0.1)
    ax.set_ylim(-len(stages) + 0.4, 0.6)
    ax.set_title(title or f"{g.name or 'chain genotype'} (red border: stride 2)", fontsize=9)
    try:
        return _save_all(fig, Path(stem), formats)
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------
# Entry point for a whole genotype
# ---------------------------------------------------------------------------


def plot_genotype(g: Genotype, out_dir: str | os.PathLike, stem: str | None = None,
                  formats: Sequence[str] = FORMATS) -> list[Path]:
    """Pictures of ``g`` in ``out_dir``: one per distinct cell, or one strip for a chain genotype."""
    out_dir = Path(out_dir)
    stem = stem or g.name or "genotype"
    if isinstance(g, ChainGenotype):
        return plot_chain(g, out_dir / f"{stem}_chain", formats=formats)
    files: list[Path] = []
    for label, cell in distinct_cells(g):
        files += plot_cell(cell, out_dir / f"{stem}_{label}", title=f"{stem}: {label.replace('_', ' ')} cell",
                           formats=formats)
    return files
