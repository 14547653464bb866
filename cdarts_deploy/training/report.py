"""The run's per-epoch record: ``log.jsonl`` (one JSON object per epoch) and an accuracy-per-epoch PNG."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from cdarts_deploy.atomic_files import write_text
from cdarts_deploy.drawing.figures import pyplot, save_figure

__all__ = ["write_log", "read_log", "plot_accuracy"]


def write_log(path: str | os.PathLike, records: Sequence[dict[str, Any]]) -> Path:
    """Rewrite the whole log (every epoch so far), so a killed run never leaves a torn last line."""
    return write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_accuracy(path: str | os.PathLike, records: Sequence[dict[str, Any]], title: str = "") -> Path:
    """Validation top-1 and top-5 per epoch."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [r["epoch"] for r in records]
    ax.plot(epochs, [r["top1"] for r in records], marker="o", label="top-1")
    ax.plot(epochs, [r["top5"] for r in records], marker=".", label="top-5")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    try:
        return save_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)
