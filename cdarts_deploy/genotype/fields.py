"""Checks on single JSON fields shared by the cell and chain forms: closed key sets, bounded numbers and strings.

Every check raises a one-line :class:`GenotypeError` ``<source>: <location>: found X, expected Y``.
The bounds themselves live in :mod:`cdarts_deploy.genotype.limits`.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sized

from cdarts_deploy.genotype.errors import GenotypeError, json_preview, repr_preview


def check_keys(doc: dict, allowed: Iterable[str], location: str, source: str) -> None:
    """Refuse keys outside ``allowed`` (a misspelt key must not be silently ignored)."""
    allowed = sorted(allowed)
    extra = sorted((k for k in doc if k not in allowed), key=str)
    if extra:
        raise GenotypeError(
            f"found unknown key {repr_preview(extra[0])}, expected only " + ", ".join(allowed),
            location or str(extra[0]),
            source,
        )


def network_hints(net: Any, hint_type: type, bounds: Mapping[str, tuple[int, int]], source: str) -> Any:
    """A document's ``network`` object as ``hint_type``: only its fields, the integer ones within ``bounds``.

    ``null`` means "not given": the field's default then applies, as it will when the saved document is read back.
    Fields without bounds (a cell network's layout) are the caller's to check.
    """
    if not isinstance(net, dict):
        raise GenotypeError(f"found {json_preview(net)}, expected an object", "network", source)
    check_keys(net, hint_type.__dataclass_fields__, "network", source)
    for key, value in net.items():
        if value is not None and key in bounds:
            low, high = bounds[key]
            bounded_int(value, low, high, f"network.{key}", source)
    return hint_type(**{k: v for k, v in net.items() if v is not None})


def check_int(value: Any, location: str, source: str, expected: str) -> int:
    """An ``int`` that is not a ``bool`` (JSON ``true`` is no count)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise GenotypeError(f"found {repr_preview(value)}, expected {expected}", location, source)
    return value


def bounded_int(value: Any, low: int, high: int, location: str, source: str, what: str = "") -> int:
    """An integer in ``low .. high``; ``what`` names the field in the message (``found kernel 9``)."""
    expected = f"a positive integer <= {high}" if low == 1 else f"an integer {low}..{high}"
    check_int(value, location, source, expected)
    if not low <= value <= high:
        found = f"{what} {repr_preview(value)}" if what else repr_preview(value)
        raise GenotypeError(f"found {found}, expected {expected}", location, source)
    return value


def check_number(value: Any, location: str, source: str) -> float:
    """A finite ``int`` or ``float`` that is not a ``bool``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        raise GenotypeError(f"found {json_preview(value)}, expected a number", location, source)
    return value


def check_count(items: Sized, limit: int, what: str, location: str, source: str) -> None:
    """At most ``limit`` entries (stages, nodes, blocks) in a list that is otherwise valid."""
    if len(items) > limit:
        raise GenotypeError(f"found {len(items)} {what}, expected at most {limit}", location, source)


def optional_text(doc: dict, key: str, limit: int, source: str) -> str | None:
    """An optional string field of at most ``limit`` characters (``name``, ``description``)."""
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise GenotypeError(f"found {json_preview(value)}, expected a string", key, source)
    if len(value) > limit:
        raise GenotypeError(f"found a string of {len(value)} characters, expected at most {limit}", key, source)
    return value
