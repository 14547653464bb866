"""The one error of the genotype format, and short previews of offending values for its messages."""

from __future__ import annotations

import json
from typing import Any

from cdarts_deploy.errors import UserError

#: A preview never exceeds this many characters, so an error stays one readable line whatever the input.
PREVIEW_CHARS = 60


class GenotypeError(UserError, ValueError):
    """A genotype document that cannot be accepted.

    The message is one line, ``<source>: <location>: found X, expected Y``, so that a user can
    find and fix the offending entry.  ``location`` is empty when the problem concerns the whole text.
    """

    def __init__(self, problem: str, location: str = "", source: str = "<genotype>") -> None:
        self.problem = _one_line(problem)
        self.location = _one_line(location)
        self.source = _one_line(source)
        where = f"{self.source}: {self.location}: " if self.location else f"{self.source}: "
        super().__init__(where + self.problem)


def _one_line(text: str) -> str:
    # A file name or a JSON key may hold a newline; commands print the message as exactly one line.
    return str(text).replace("\r", "\\r").replace("\n", "\\n")


def _clip(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."


def json_preview(value: Any) -> str:
    """A value as JSON (``[1, 2]``, ``null``, ``"text"``), clipped to :data:`PREVIEW_CHARS`."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):  # not JSON data, or nested beyond the interpreter's limit
        text = f"a {type(value).__name__}"
    return _clip(text)


def repr_preview(value: Any) -> str:
    """A value as Python writes it (``'sep_conv_3x3'``, ``True``), clipped to :data:`PREVIEW_CHARS`."""
    if isinstance(value, str):
        return _clip(repr(value[:PREVIEW_CHARS]))
    if isinstance(value, (list, tuple, dict)):
        return json_preview(value)
    try:
        return _clip(repr(value))
    except ValueError:  # an int beyond Python's digit limit for str()
        return f"an integer of {value.bit_length()} bits"
