"""Chain genotypes drawn as one row of blocks per stage: kernel size by colour, kernel/expansion/SE as text,
stride-2 blocks with a red border."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from matplotlib.patches import FancyBboxPatch

from cdarts_deploy.drawing.figures import FORMATS, pyplot, save_formats
from cdarts_deploy.genotype import Block, ChainGenotype

KERNEL_COLOURS = {1: "#f0f0f0", 3: "#c6dbef", 5: "#6baed6", 7: "#2171b5"}


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


def plot_chain(g: ChainGenotype, stem: str | os.PathLike, title: str = "",
               formats: Sequence[str] = FORMATS) -> list[Path]:
    """Draw a chain genotype as one row of blocks per stage (kernel by colour, label kernel/expansion)."""
    plt = pyplot()

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
        return save_formats(fig, Path(stem), formats, bbox_inches="tight")
    finally:
        plt.close(fig)
