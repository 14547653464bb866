"""All pictures of one genotype: one diagram per distinct cell, one strip for a chain genotype, one NAS-Bench-201
cell."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from cdarts_deploy.drawing.cells import distinct_cells, plot_cell
from cdarts_deploy.drawing.chains import plot_chain
from cdarts_deploy.drawing.figures import FORMATS
from cdarts_deploy.drawing.nb201_cells import plot_nb201_cell
from cdarts_deploy.genotype import ChainGenotype, Genotype, Nb201Genotype


def plot_genotype(g: Genotype, out_dir: str | os.PathLike, stem: str | None = None,
                  formats: Sequence[str] = FORMATS) -> list[Path]:
    """Pictures of ``g`` in ``out_dir`` (PNG and SVG by default); returns the files written."""
    out_dir = Path(out_dir)
    stem = stem or g.name or "genotype"
    if isinstance(g, ChainGenotype):
        return plot_chain(g, out_dir / f"{stem}_chain", formats=formats)
    if isinstance(g, Nb201Genotype):
        return plot_nb201_cell(g, out_dir / f"{stem}_cell", formats=formats)
    files: list[Path] = []
    for label, cell in distinct_cells(g):
        files += plot_cell(cell, out_dir / f"{stem}_{label}", title=f"{stem}: {label.replace('_', ' ')} cell",
                           formats=formats)
    return files
