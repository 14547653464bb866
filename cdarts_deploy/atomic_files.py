"""Write-then-rename: the one way this project publishes a file.

A reader never sees a half-written file: data goes to a temporary file in the destination
folder, is flushed to disk (``fsync``), gets the ordinary umask-based mode (``mkstemp``
would leave 0600) and is renamed over the destination.  An interrupted write leaves the
old file, or none, and no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator


def default_file_mode() -> int:
    """0666 minus the process umask: the mode ``open()`` would have given a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def temp_beside(final: str | os.PathLike) -> Path:
    """An empty temporary file in the folder of ``final``, with the same suffix (tools read formats from it)."""
    final = Path(final)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent)
    os.close(fd)
    return Path(tmp)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Flush ``tmp`` to disk, give it the default file mode and rename it to ``final``."""
    tmp = Path(tmp)
    _fsync_file(tmp)
    os.chmod(tmp, default_file_mode())
    os.replace(tmp, final)
    return Path(final)


@contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write (by any library); it becomes ``final`` only if the block finishes."""
    tmp = temp_beside(final)
    try:
        yield tmp
        publish(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically replace ``path`` with UTF-8 ``text``."""
    return write_bytes(path, text.encode("utf-8"))


def write_with(path: str | os.PathLike, writer: Callable[[BinaryIO], None]) -> Path:
    """Atomically replace ``path`` with what ``writer`` writes to an open binary file (e.g. ``torch.save``)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            writer(fh)
    return Path(path)


def publish_together(pairs: list[tuple[Path, Path]]) -> None:
    """Rename several finished temporary files into place, in order; used when files belong together
    (a model and its report): everything is written first, so a failure leaves none of them."""
    for tmp, final in pairs:
        publish(tmp, final)
