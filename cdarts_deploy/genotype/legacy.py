"""Genotypes written by the reference code, read as data with :mod:`ast` and never evaluated.

Three legacy forms are accepted:

* a JSON object ``{"0": "Genotype(...)", "1": "Genotype(...)", ...}``, one string per stage;
* a bare ``Genotype(normal=[...], normal_concat=range(2, 6), reduce=[...], reduce_concat=...)``
  (positional arguments and a module prefix such as ``genotypes.Genotype`` are fine);
* the original DARTS flat form, where ``normal`` lists two ``(operation, input)`` pairs per node
  in node order and the concats are lists.

The text is bounded before :func:`ast.parse` and the syntax tree before :func:`ast.literal_eval`
(see :mod:`cdarts_deploy.genotype.limits`).
"""

from __future__ import annotations

import ast
import re
from typing import Any

from cdarts_deploy.genotype import limits
from cdarts_deploy.genotype.cell import parse_cell
from cdarts_deploy.genotype.errors import GenotypeError, json_preview, repr_preview
from cdarts_deploy.genotype.fields import check_count
from cdarts_deploy.genotype.model import CellGenotype, CellStage

FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")

# Stage keys of the reference code's JSON file: "0", "1", ... (a few ASCII digits, never a huge number).
_STAGE_KEY = re.compile(r"[0-9]{1,4}")


def is_legacy_stages(doc: dict) -> bool:
    """Whether a JSON object is the reference code's ``{"0": "Genotype(...)", ...}`` file."""
    return bool(doc) and all(isinstance(k, str) and _STAGE_KEY.fullmatch(k) for k in doc)


def legacy_stages_from_dict(doc: dict, source: str) -> CellGenotype:
    """A cell genotype from ``{"0": "Genotype(...)", "1": ...}`` (keys consecutive from 0)."""
    check_count(doc, limits.MAX_STAGES, "stages", "", source)
    keys = sorted(doc, key=int)
    if [int(k) for k in keys] != list(range(len(keys))):
        raise GenotypeError(f"found stage keys {keys}, expected consecutive keys \"0\", \"1\", ...", "", source)
    stages = []
    for k in keys:
        if not isinstance(doc[k], str):
            raise GenotypeError(f"found {json_preview(doc[k])}, expected a \"Genotype(...)\" string", k, source)
        stages.append(parse_genotype_call(doc[k], source, f"[{k!r}]"))
    return CellGenotype(stages=tuple(stages))


def parse_genotype_call(text: str, source: str, location: str = "genotype") -> CellStage:
    """One stage from a ``Genotype(...)`` expression."""
    return _LegacyParser(source, location).parse(text)


class _LegacyParser:
    """Reads ``Genotype(normal=..., normal_concat=range(2, 6), ...)`` as data via ``ast``."""

    def __init__(self, source: str, location: str) -> None:
        self.source = source
        self.location = location

    def error(self, problem: str, where: str = "") -> GenotypeError:
        return GenotypeError(problem, self.location + (f".{where}" if where else ""), self.source)

    def parse(self, text: str) -> CellStage:
        text = text.strip()
        limits.check_legacy_text(text, self.location, self.source)
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as exc:
            raise self.error(f"found text that is not a Genotype(...) expression ({exc.msg}), expected "
                             "Genotype(normal=[...], normal_concat=..., reduce=[...], reduce_concat=...)") from None
        except (ValueError, MemoryError, RecursionError):  # the parser's own limits (nesting, digits)
            raise self.error("found an expression too deeply nested or too large, expected "
                             "Genotype(normal=[...], normal_concat=..., reduce=[...], reduce_concat=...)") from None
        limits.check_legacy_tree(tree, self.location, self.source)
        call = tree.body
        if not (isinstance(call, ast.Call) and _call_name(call) == "Genotype"):
            raise self.error("found an expression that is not Genotype(...), expected Genotype(normal=..., ...)")
        values: dict[str, ast.AST] = {}
        for name, arg in zip(FIELDS, call.args):
            values[name] = arg
        for kw in call.keywords:
            if kw.arg not in FIELDS:
                raise self.error(f"found field {repr_preview(kw.arg)}, expected only " + ", ".join(FIELDS))
            values[kw.arg] = kw.value
        missing = [f for f in FIELDS if f not in values]
        if missing:
            raise self.error("missing field(s) " + ", ".join(missing))
        cells = {}
        for kind in ("normal", "reduce"):
            nodes = self._nodes(values[kind], kind)
            concat = self._concat(values[kind + "_concat"], kind + "_concat")
            cells[kind] = parse_cell(nodes, concat, f"{self.location}.{kind}", self.source)
        return CellStage(normal=cells["normal"], reduce=cells["reduce"])

    def _literal(self, node: ast.AST, where: str, expected: str) -> Any:
        try:
            return ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise self.error(f"found a non-literal value, expected {expected}", where) from None

    def _nodes(self, node: ast.AST, where: str) -> list:
        value = self._literal(node, where, "a list of (operation, input) pairs")
        if isinstance(value, (list, tuple)) and value and all(_is_pair(v) for v in value):
            # Original DARTS flat form: 2 edges per node, in node order.
            if len(value) % 2:
                raise self.error(f"found {len(value)} flat (operation, input) pairs, expected an even number", where)
            return [[value[i], value[i + 1]] for i in range(0, len(value), 2)]
        return value

    def _concat(self, node: ast.AST, where: str) -> list[int]:
        if isinstance(node, ast.Call) and _call_name(node) == "range":
            args = [self._literal(a, where, "range(a, b)") for a in node.args]
            if not 1 <= len(args) <= 3 or not all(_is_int(a) for a in args) or node.keywords:
                raise self.error("found a malformed range(), expected range(a, b)", where)
            try:
                span = range(*args)
                size = len(span)
            except (ValueError, OverflowError):  # a zero step, or more items than an index can count
                raise self.error("found a malformed range(), expected range(a, b)", where) from None
            # The range becomes a list: bound it as a cell's node indices are bounded (nodes + 2 inputs).
            if size > limits.MAX_NODES_PER_CELL + 2:
                raise self.error(
                    f"found a range of {size} node indices, expected at most {limits.MAX_NODES_PER_CELL + 2}", where
                )
            return list(span)
        value = self._literal(node, where, "range(a, b) or a list of node indices")
        return list(value) if isinstance(value, (list, tuple)) else value


def _call_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):  # e.g. genotypes.Genotype(...)
        return func.attr
    return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_pair(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 2 and isinstance(v[0], str)
