"""Matplotlib without a display, and saving figures through write-then-rename."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import matplotlib.pyplot as plt

from cdarts_deploy.atomic_files import atomic_path

FORMATS = ("png", "svg")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only; never needs a display)."""
    matplotlib.use("Agg")

    return plt


def save_figure(fig: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Save a figure via a temporary file in the same folder and a rename (format from the suffix)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **kwargs)
    return path


def save_formats(fig: Any, stem: Path, formats: Sequence[str], **kwargs: Any) -> list[Path]:
    """``stem.<fmt>`` for every format; SVG text stays text (searchable, editable), not glyph outlines."""
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        return [save_figure(fig, stem.with_name(f"{stem.name}.{fmt}"), dpi=150, **kwargs) for fmt in formats]
