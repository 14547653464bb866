"""Genotype text and files: parsing (:func:`loads`, :func:`load`) and canonical writing (:func:`dumps`, :func:`save`).

Reading is bounded (:mod:`cdarts_deploy.genotype.limits`): whatever the bytes, the result is a
genotype or one :class:`GenotypeError`.  Writing is canonical: saving, loading and saving again
gives the same bytes.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from cdarts_deploy import bounded_json
from cdarts_deploy.atomic_files import write_text
from cdarts_deploy.genotype import limits
from cdarts_deploy.genotype.document import from_dict, to_dict
from cdarts_deploy.genotype.errors import GenotypeError
from cdarts_deploy.genotype.model import Genotype
from cdarts_deploy.genotype.nb201 import looks_like_nb201_string, nb201_from_string
from cdarts_deploy.genotype.zoo import looks_like_zoo_name, zoo_text

# ---------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------


def loads(text: str, source: str = "<string>") -> Genotype:
    """Parse genotype text: JSON (current or legacy), a bare ``Genotype(...)`` or a NAS-Bench-201 string."""
    limits.check_text_size(text, source)
    stripped = text.strip()
    if not stripped:
        raise GenotypeError("found an empty document, expected a genotype JSON object", "", source)
    if stripped[0] in '{"[':
        doc = _parse_json(stripped, source)
    elif looks_like_nb201_string(stripped):  # NAS-Bench-201's own text
        return nb201_from_string(stripped, source)
    else:
        doc = stripped  # a bare Genotype(...) expression
    try:
        return from_dict(doc, source)
    except RecursionError:  # not expected within the depth bound; a one-line error all the same
        raise GenotypeError("found a document nested too deeply, expected a genotype", "", source) from None


def _parse_json(text: str, source: str) -> Any:
    try:
        return bounded_json.loads(text, expected="a genotype JSON object", source=source,
                                  max_bytes=limits.MAX_FILE_BYTES, max_depth=limits.MAX_JSON_DEPTH)
    except bounded_json.JSONInputError as exc:
        raise GenotypeError(exc.problem, exc.location, source) from None


def dumps(g: Genotype) -> str:
    """Canonical JSON text: saving, loading and saving again is byte-identical."""
    return _format(to_dict(g), 0) + "\n"


def _format(value: Any, level: int) -> str:
    # Short containers of scalars stay on one line so that cells read node by node.
    flat = json.dumps(value)
    if not isinstance(value, (list, dict)) or (len(flat) <= 120 and level >= 2):
        return flat
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k)}: {_format(v, level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if not value:
        return "[]"
    items = [inner + _format(v, level + 1) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + pad + "]"


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def load(path_or_name: str | os.PathLike) -> Genotype:
    """Load a genotype from a file path, a built-in zoo name or a NAS-Bench-201 string."""
    text_name = str(path_or_name)
    path = Path(path_or_name)
    exists, is_file = _probe(path)
    if not exists and looks_like_zoo_name(text_name):
        return loads(zoo_text(text_name), f"zoo:{text_name}")
    if not exists and looks_like_nb201_string(text_name):
        return loads(text_name, "<arch>")
    if not is_file:
        raise GenotypeError("file not found; expected a genotype JSON file or a zoo name", "", text_name)
    g = loads(_read_text(path, text_name), text_name)
    if g.name is None:
        g = replace(g, name=path.stem)
    return g


def _probe(path: Path) -> tuple[bool, bool]:
    """(exists, is a regular file); a path the system cannot even look up (too long, NUL byte) is neither."""
    try:
        return path.exists(), path.is_file()
    except (OSError, ValueError):
        return False, False


def _read_text(path: Path, source: str) -> str:
    try:
        return bounded_json.read_text(path, expected="a UTF-8 genotype JSON file", source=source,
                                      max_bytes=limits.MAX_FILE_BYTES)
    except bounded_json.JSONInputError as exc:
        raise GenotypeError(exc.problem, exc.location, source) from None


def save(g: Genotype, path: str | os.PathLike) -> None:
    """Write the canonical JSON atomically (temporary file, then rename)."""
    write_text(path, dumps(g))
