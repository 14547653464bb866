"""A PNG of searched cells: one panel per (stage, normal/reduce) with nodes and labelled edges."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from cdarts_deploy.genotype import Cell, CellGenotype  # noqa: E402


def _draw_cell(ax: plt.Axes, cell: Cell, title: str) -> None:
    n = len(cell.nodes)
    pos = {0: (0.0, 0.75), 1: (0.0, 0.25)}
    for i in range(n):
        pos[i + 2] = (0.2 + 0.6 * i / max(1, n - 1), 0.9 - 0.8 * i / max(1, n - 1))
    pos["out"] = (1.0, 0.5)
    for i, edges in enumerate(cell.nodes):
        for op, src in edges:
            (x0, y0), (x1, y1) = pos[src], pos[i + 2]
            ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", color="0.4", lw=1))
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, op, fontsize=6, ha="center", va="center",
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))
    for node in cell.concat:
        ax.annotate("", pos["out"], pos[node], arrowprops=dict(arrowstyle="->", color="0.8", lw=0.8))
    labels = {0: "c_{k-2}", 1: "c_{k-1}", "out": "c_k"}
    for key, (x, y) in pos.items():
        ax.text(x, y, labels.get(key, str(key)), fontsize=7, ha="center", va="center",
                bbox=dict(boxstyle="circle" if isinstance(key, int) and key >= 2 else "round", fc="#dde8f5"))
    ax.set_title(title, fontsize=8)
    ax.set_xlim(-0.1, 1.1)
    ax.set_ylim(0, 1)
    ax.axis("off")


def draw_genotype(genotype: CellGenotype, path: str | os.PathLike) -> None:
    """Write the cells of ``genotype`` as a PNG at ``path`` (atomically)."""
    rows = len(genotype.stages)
    fig, axes = plt.subplots(rows, 2, figsize=(10, 3.2 * rows), squeeze=False)
    for s, stage in enumerate(genotype.stages):
        prefix = f"stage {s} " if rows > 1 else ""
        _draw_cell(axes[s][0], stage.normal, prefix + "normal cell")
        _draw_cell(axes[s][1], stage.reduce, prefix + "reduction cell")
    fig.tight_layout()
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
