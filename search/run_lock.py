"""One writer per output folder: an advisory lock on ``--out/search.lock`` holding the writer's pid.

``fcntl.flock`` locks belong to the open file, so the kernel drops them when the
process dies: a killed run never leaves the folder stuck, and ``--resume`` of it
works.  The pid in the file only serves the message of the process that was refused.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from .errors import SearchInputError

LOCK_FILE = "search.lock"


class RunLock:
    def __init__(self) -> None:
        self.handle: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self.handle is not None

    def acquire(self, out: Path) -> None:
        """Lock ``out`` for this process, or raise a one-line error naming the process that holds it."""
        if self.handle is not None:
            return
        path = out / LOCK_FILE
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise SearchInputError(f"--out {out}: another cdarts-search (pid {holder}) is writing there; "
                                   "wait for it to finish or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing the file drops the lock
            self.handle = None
