"""Write-then-rename helpers so that an interrupted command leaves no half-written file."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _default_mode() -> int:
    # mkstemp creates 0600 files; published files get the usual umask-based mode instead
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def temp_beside(final: str | os.PathLike) -> Path:
    """An empty temporary file in the folder of ``final``, with the same suffix (formats are read from it)."""
    final = Path(final)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    return Path(tmp)


def publish(tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Give ``tmp`` the default file mode and rename it to ``final``."""
    os.chmod(tmp, _default_mode())
    os.replace(tmp, final)
    return Path(final)


@contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; it becomes ``final`` only if the block finishes."""
    tmp = temp_beside(final)
    try:
        yield tmp
        publish(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
