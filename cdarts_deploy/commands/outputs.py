"""Where a command may write: never over one of its own inputs, never over an earlier run's results unless
asked (``--overwrite``), and only into a folder that can take the file.  Every check runs before anything is
created, so a refusal leaves the disk as it was."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from cdarts_deploy.commands.args import UsageError

PathLike = str | os.PathLike


def _same(a: Path, b: Path) -> bool:
    # resolve() follows symlinks and "..": two spellings of one file are one file
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def refuse_input_collision(outputs: Iterable[PathLike], inputs: Iterable[PathLike | None], option: str) -> None:
    """An output that is one of the command's inputs would destroy what the command reads: refused always."""
    given = [Path(p) for p in inputs if p is not None]
    for out in map(Path, outputs):
        for src in given:
            if _same(out, src):
                raise UsageError(f"{option} would write {out}, which is the input {src}; "
                                 f"pass another {option}")


def refuse_earlier_results(out_dir: PathLike, names: Iterable[str], overwrite: bool, *, resume_hint: bool = False,
                           ) -> None:
    """``out_dir`` already holding any of ``names`` (an earlier run's results) is refused unless ``--overwrite``."""
    if overwrite:
        return
    folder = Path(out_dir)
    if not folder.is_dir():
        return
    found = sorted(n for n in names if (folder / n).exists())
    if found:
        more = ", --resume to continue it" if resume_hint else ""
        raise UsageError(f"--out {folder} already holds an earlier run ({', '.join(found[:3])}"
                         f"{', ...' if len(found) > 3 else ''}); pass another --out{more} or --overwrite to replace it")


def existing_outputs(out_dir: PathLike, stem: str) -> list[str]:
    """Files of ``out_dir`` a command writing ``<stem>.*`` / ``<stem>_*`` would replace."""
    folder = Path(out_dir)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((f"{stem}.", f"{stem}_")))


def refuse_replacing(out_dir: PathLike, stem: str, inputs: Iterable[PathLike | None], overwrite: bool) -> None:
    """A command that writes ``<stem>.*`` / ``<stem>_*`` into ``out_dir``: the stem is a file name, no output is one
    of ``inputs`` (ever), and an earlier run's outputs are replaced only with ``--overwrite``."""
    if "/" in stem or "\\" in stem or stem in ("", ".", ".."):
        raise UsageError(f"--name {stem!r} is not a file stem; pass a name without folders")
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder} is a file; pass a folder")
    found = existing_outputs(folder, stem)
    refuse_input_collision([folder / f for f in found], inputs, "--out/--name")
    if found and not overwrite:
        raise UsageError(f"--out {folder} already holds {', '.join(found[:3])}{', ...' if len(found) > 3 else ''}; "
                         "pass another --out or --name, or --overwrite to replace them")


def check_json_target(path: PathLike, inputs: Iterable[PathLike | None], overwrite: bool,
                      option: str = "--json") -> Path:
    """``--json FILE``: not an input, not an existing file unless ``--overwrite``, in an existing writable folder."""
    target = Path(path)
    refuse_input_collision([target], inputs, option)
    if target.is_dir():
        raise UsageError(f"{option} {target} is a folder; pass a file name")
    if target.exists() and not overwrite:
        raise UsageError(f"{option} {target} exists; pass another file or --overwrite to replace it")
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {target}: folder {parent} does not exist; create it or pass another file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {target}: folder {parent} is not writable; pass another file")
    return target
