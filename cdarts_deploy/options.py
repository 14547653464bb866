"""Option declarations shared by the search and training configurations: a dataclass field that carries its
command-line help (and argparse extras such as ``choices``), so one declaration gives the default, the flag and
its ``--help`` text."""

from __future__ import annotations

from dataclasses import field
from typing import Any, Mapping


def option(default: Any, help: str, **meta: Any) -> Any:  # noqa: A002 - argparse's word
    """A dataclass field with ``default`` whose metadata holds ``help`` and any argparse extras."""
    return field(default=default, metadata={"help": help, **meta})


def out_of_bounds(values: Mapping[str, Any], bounds: Mapping[str, tuple[float, float]]) -> str | None:
    """The refusal of the first ``values[name]`` given (not None) outside ``bounds[name]`` (inclusive; NaN,
    infinity, booleans and non-numbers never are inside), or None when all are inside."""
    for name, (low, high) in bounds.items():
        value = values.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            return f"--{name.replace('_', '-')} {value!r}: must be from {low:g} to {high:g}"
    return None

