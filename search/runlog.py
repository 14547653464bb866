"""The per-epoch JSON-lines log: one object per finished epoch, rewritten safely on resume."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cdarts_deploy.atomic_files import write_text


class EpochLog:
    """Append one JSON object per epoch to ``path``; only rank 0 creates one."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut short by a kill; everything after it is dropped on resume
        return rows

    def truncate_to(self, epoch: int) -> None:
        """Keep only the rows of epochs before ``epoch`` (a resumed run rewrites the later ones)."""
        rows = [r for r in self.read() if r.get("epoch", 0) < epoch]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
