"""Benchmark accuracy of the derived architecture against search epoch (NAS-Bench-201 searches)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from cdarts_deploy.drawing.figures import pyplot, save_figure


def plot_benchmark_curve(rows: Sequence[dict[str, Any]], path: str | os.PathLike, datasets: Sequence[str],
                         title: str = "") -> Path | None:
    """A PNG of ``bench_<dataset>_test`` (solid) and ``_valid`` (dashed) per epoch of ``rows``.

    Returns None (and writes nothing) when no row has a benchmark accuracy (architectures outside the
    benchmark folder, or no ``--benchmark``).
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    drawn = False
    for colour, dataset in zip(("tab:blue", "tab:orange", "tab:green"), datasets):
        for split, style in (("test", "-"), ("valid", "--")):
            points = [(r["epoch"], r[f"bench_{dataset}_{split}"]) for r in rows
                      if isinstance(r.get(f"bench_{dataset}_{split}"), (int, float))]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, style, color=colour, marker="o", markersize=3, label=f"{dataset} {split}")
                drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("search epoch")
    ax.set_ylabel("benchmark top-1 accuracy (%, 200 epochs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    try:
        return save_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)
