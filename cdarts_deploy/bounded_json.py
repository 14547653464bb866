"""JSON read within bounds: whatever the bytes, a value or one :class:`JSONInputError`, quickly.

:func:`json.loads` alone recurses once per nesting level (a file of ten thousand ``[`` ends in a
``RecursionError`` traceback), accepts ``NaN``/``Infinity``, keeps the last of repeated keys and
converts integers of any length.  Every JSON document a user hands to a command (genotypes, search
options) is read here instead, with a size bound, a nesting bound checked before parsing, unique
keys, finite numbers and bounded integers.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from cdarts_deploy.errors import UserError

DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_MAX_DEPTH = 32

# A JSON string (escapes included) or one bracket: brackets inside strings do not nest.
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class JSONInputError(UserError, ValueError):
    """JSON text outside the bounds or not JSON at all; ``problem`` and ``location`` say what and where."""

    def __init__(self, problem: str, location: str = "", source: str = "<json>") -> None:
        self.problem, self.location, self.source = problem, location, source
        where = f"{source}: {location}: " if location else f"{source}: "
        super().__init__(where + problem)


def line_column(text: str, offset: int) -> str:
    """``line L column C`` of a character offset, as json's own errors say it."""
    line = text.count("\n", 0, offset) + 1
    column = offset - text.rfind("\n", 0, offset)
    return f"line {line} column {column}"


def check_depth(text: str, max_depth: int, expected: str, source: str) -> None:
    """Refuse JSON nested deeper than ``max_depth`` before :func:`json.loads` recurses into it."""
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        bracket = match.group()
        if bracket in "[{":
            depth += 1
            if depth > max_depth:
                raise JSONInputError(
                    f"found JSON nested more than {max_depth} levels deep, expected {expected} "
                    f"(at most {max_depth} levels)",
                    line_column(text, match.start()),
                    source,
                )
        elif bracket in "]}":
            depth -= 1


def loads(text: str, *, expected: str = "a JSON document", source: str = "<json>",
          max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse ``text``; ``expected`` completes the messages ("found ..., expected <expected>")."""
    if len(text) > max_bytes:
        raise JSONInputError(f"found {len(text)} characters, expected {expected} of at most {max_bytes} bytes",
                             "", source)
    check_depth(text, max_depth, expected, source)

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict:
        # json keeps the last of repeated keys; a repeated key is more likely a mistake than an override.
        doc: dict[str, Any] = {}
        for key, value in pairs:
            if key in doc:
                raise JSONInputError(f"found key {_preview(key)} twice in one object, expected each key once",
                                     "", source)
            doc[key] = value
        return doc

    def finite_float(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):  # 1e999 overflows to infinity
            raise JSONInputError(f"found {_preview(literal)}, expected a finite number", "", source)
        return value

    def no_constant(name: str) -> Any:
        raise JSONInputError(f"found {name}, expected a finite number (JSON has no {name})", "", source)

    try:
        return json.loads(text, object_pairs_hook=unique_keys, parse_float=finite_float, parse_constant=no_constant)
    except JSONInputError:
        raise
    except json.JSONDecodeError as exc:
        raise JSONInputError(f"found invalid JSON ({exc.msg}), expected {expected}",
                             f"line {exc.lineno} column {exc.colno}", source) from None
    except ValueError:  # an integer longer than Python converts to int (4300 digits by default)
        raise JSONInputError(f"found an integer with thousands of digits, expected {expected}", "", source) from None
    except RecursionError:  # the depth check keeps json.loads away from this; kept as a fallback
        raise JSONInputError(f"found JSON nested too deeply, expected {expected}", "", source) from None


def read_text(path: str | os.PathLike, *, expected: str = "a JSON file", source: str | None = None,
              max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """UTF-8 text of a file, refusing without reading it all a file larger than ``max_bytes``."""
    path = Path(path)
    source = str(path) if source is None else source
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)  # one byte past the bound tells "too large" without reading it all
    except OSError as exc:
        raise JSONInputError(f"cannot read the file ({exc.strerror or exc}); expected {expected}", "", source) from None
    if len(data) > max_bytes:
        raise JSONInputError(f"found a file larger than {max_bytes} bytes, expected {expected} of at most "
                             f"{max_bytes} bytes", "", source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONInputError(f"cannot read the file ({exc}); expected {expected} in UTF-8", "", source) from None


def load(path: str | os.PathLike, *, expected: str = "a JSON file", max_bytes: int = DEFAULT_MAX_BYTES,
         max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """:func:`read_text` then :func:`loads`."""
    text = read_text(path, expected=expected, max_bytes=max_bytes)
    return loads(text, expected=expected, source=str(path), max_bytes=max_bytes, max_depth=max_depth)


def _preview(value: str, limit: int = 60) -> str:
    text = repr(value[:limit])
    return text if len(value) <= limit else text[:-1] + "...'"
