"""A NAS-Bench-201 cell drawn as its 4 nodes in a row with one labelled arc per edge (``none`` edges dotted)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from cdarts_deploy.drawing.figures import FORMATS, pyplot, save_formats
from cdarts_deploy.genotype import Nb201Genotype

OP_COLOURS = {"none": "#bbbbbb", "skip_connect": "#2ca02c", "nor_conv_1x1": "#1f77b4", "nor_conv_3x3": "#d62728",
              "avg_pool_3x3": "#9467bd"}


def plot_nb201_cell(g: Nb201Genotype, stem: str | os.PathLike, title: str = "",
                    formats: Sequence[str] = FORMATS) -> list[Path]:
    """Nodes 0..3 left to right; the arc from node j to node i is labelled with its operation."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 3.2))
    ax.axis("off")
    for node in range(len(g.nodes) + 1):
        ax.add_patch(plt.Circle((node * 2.0, 0.0), 0.28, fc="#f0f0f0", ec="#333333", zorder=3))
        ax.text(node * 2.0, 0.0, "in" if node == 0 else ("out" if node == len(g.nodes) else str(node)),
                ha="center", va="center", fontsize=8, zorder=4)
    for target, ops in enumerate(g.nodes, start=1):
        for src, op in enumerate(ops):
            span = target - src
            x0, x1 = src * 2.0 + 0.28, target * 2.0 - 0.28
            rad = 0.0 if span == 1 else -0.35 * (1 if (src + target) % 2 else -1)
            ax.annotate("", xy=(x1, 0.0), xytext=(x0, 0.0),
                        arrowprops=dict(arrowstyle="->", color=OP_COLOURS[op], lw=1.4,
                                        linestyle=":" if op == "none" else "-", connectionstyle=f"arc3,rad={rad}"))
            height = 0.0 if span == 1 else -rad * (x1 - x0) / 2
            ax.text((x0 + x1) / 2, height + (0.12 if span == 1 else 0.0), op, ha="center", va="center", fontsize=7,
                    color=OP_COLOURS[op], bbox=dict(fc="white", ec="none", pad=0.5))
    ax.set_xlim(-0.6, 2.0 * len(g.nodes) + 0.6)
    ax.set_ylim(-2.2, 2.2)
    index = f" (benchmark index {g.index})" if g.index is not None else ""
    ax.set_title(title or f"{g.name or 'nb201 genotype'}{index}", fontsize=9)
    try:
        return save_formats(fig, Path(stem), formats, bbox_inches="tight")
    finally:
        plt.close(fig)
