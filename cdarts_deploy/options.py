"""Option declarations shared by the search and training configurations: a dataclass field that carries its
command-line help (and argparse extras such as ``choices``), so one declaration gives the default, the flag and
its ``--help`` text."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def option(default: Any, help: str, **meta: Any) -> Any:  # noqa: A002 - argparse's word
    """A dataclass field with ``default`` whose metadata holds ``help`` and any argparse extras."""
    return field(default=default, metadata={"help": help, **meta})
