"""The genotype format: pure data, no torch.

A genotype is a versioned JSON document of one of two kinds:

* ``cell`` -- DARTS cell space: one or more stages, each with a normal and a
  reduction cell given per intermediate node as ``[operation, input_index]``
  pairs, plus the concatenated node indices.
* ``chain`` -- the chain-structured MBConv space: stages of blocks that map
  one-to-one onto timm arch strings (``ir_r1_k5_s2_e6_c24_se0.25``).

Legacy files of the reference code (``{"0": "Genotype(...)", ...}``), bare
``Genotype(...)`` strings and the original DARTS flat form are parsed with
:mod:`ast` as data, never evaluated.  Every rejection raises
:class:`GenotypeError` naming the source, the location, what was found and
what was expected.
"""

from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Union

from cdarts_deploy.atomic_files import write_text
from cdarts_deploy.errors import UserError

FORMAT = "cdarts-genotype"
VERSION = 1

#: Operations a discrete DARTS cell may use (order as in the reference code).
CELL_OPS: tuple[str, ...] = (
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
#: The search vocabulary: the cell operations plus ``none`` (search only).
SEARCH_OPS: tuple[str, ...] = CELL_OPS + ("none",)

#: (kernel, expansion) candidates of the chain space, indexed by choice.
CHAIN_CHOICES: tuple[tuple[int, int], ...] = ((3, 4), (3, 6), (5, 4), (5, 6), (7, 4), (7, 6))

BLOCK_TYPES = ("ds", "ir", "cn")
LAYOUTS = ("cifar", "imagenet")


#: Width, number of cells, classes and input size of a cell network when neither the caller nor the genotype says
#: (the paper's CIFAR and ImageNet evaluation networks, Sections 4.3-4.4).
LAYOUT_DEFAULTS: dict[str, dict[str, int]] = {
    "cifar": dict(width=36, cells=20, num_classes=10, input_size=32),
    "imagenet": dict(width=48, cells=14, num_classes=1000, input_size=224),
}

#: Classes and input size of a chain network when neither the caller nor the genotype says (ImageNet).
CHAIN_DEFAULTS: dict[str, int] = dict(num_classes=1000, input_size=224)


def is_searchable_block(stage_index: int, num_stages: int, stage_len: int, block_type: str) -> bool:
    """Chain space: a block's (kernel, expansion) is searched in the inner stages of more than one ir block."""
    return 0 < stage_index < num_stages - 1 and stage_len > 1 and block_type == "ir"


class GenotypeError(UserError, ValueError):
    """A genotype document that cannot be accepted.

    The message reads ``<source>: <location>: <problem>`` so that a user can
    find and fix the offending entry.
    """

    def __init__(self, problem: str, location: str = "", source: str = "<genotype>") -> None:
        self.problem = problem
        self.location = location
        self.source = source
        where = f"{source}: {location}: " if location else f"{source}: "
        super().__init__(where + problem)


# ---------------------------------------------------------------------------
# Data classes
# ---------------------------------------------------------------------------

Edge = tuple[str, int]


@dataclass(frozen=True)
class Cell:
    """A DARTS cell: ``nodes[i]`` lists the edges into node ``i + 2``."""

    nodes: tuple[tuple[Edge, ...], ...]
    concat: tuple[int, ...]

    def __str__(self) -> str:
        parts = []
        for i, edges in enumerate(self.nodes):
            parts.append(f"n{i + 2}=" + "+".join(f"{op}({src})" for op, src in edges))
        return " ".join(parts) + f" concat={list(self.concat)}"


@dataclass(frozen=True)
class CellStage:
    normal: Cell
    reduce: Cell


@dataclass(frozen=True)
class CellNetwork:
    """Optional hints that let a genotype export without extra flags."""

    layout: str | None = None
    width: int | None = None
    cells: int | None = None
    num_classes: int | None = None
    input_size: int | None = None


@dataclass(frozen=True)
class CellGenotype:
    stages: tuple[CellStage, ...]
    network: CellNetwork = field(default_factory=CellNetwork)
    name: str | None = None
    description: str | None = None
    kind: str = field(default="cell", init=False)

    def stage(self, index: int, num_stages: int = 3) -> CellStage:
        """The cells used in network stage ``index`` (one stage means shared)."""
        if len(self.stages) == 1:
            return self.stages[0]
        if len(self.stages) != num_stages:
            raise GenotypeError(
                f"genotype has {len(self.stages)} stages but the network has {num_stages}; "
                f"give 1 stage (shared) or {num_stages}",
                "stages",
                self.name or "<genotype>",
            )
        return self.stages[index]

    def __str__(self) -> str:
        lines = [f"cell genotype {self.name or ''}".rstrip()]
        for i, st in enumerate(self.stages):
            lines.append(f"  stage {i} normal: {st.normal}")
            lines.append(f"  stage {i} reduce: {st.reduce}")
        hints = {k: v for k, v in self.network.__dict__.items() if v is not None}
        if hints:
            lines.append(f"  network: {hints}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Block:
    """One timm arch-string entry: ``{type}_r{repeats}_k{kernel}_s{stride}_e{expansion}_c{out}[_se{ratio}]``."""

    type: str
    kernel: int
    expansion: float
    stride: int
    out_channels: int
    se_ratio: float = 0.0
    repeats: int = 1

    def to_arch_string(self) -> str:
        if self.type == "cn":
            s = f"cn_r{self.repeats}_k{self.kernel}_s{self.stride}_c{self.out_channels}"
        else:
            s = (
                f"{self.type}_r{self.repeats}_k{self.kernel}_s{self.stride}"
                f"_e{_num(self.expansion)}_c{self.out_channels}"
            )
        if self.se_ratio:
            s += f"_se{_num(self.se_ratio)}"
        return s


@dataclass(frozen=True)
class ChainNetwork:
    num_classes: int | None = None
    input_size: int | None = None
    stem_channels: int = 16
    head_channels: int = 1280


@dataclass(frozen=True)
class ChainGenotype:
    stages: tuple[tuple[Block, ...], ...]
    network: ChainNetwork = field(default_factory=ChainNetwork)
    name: str | None = None
    description: str | None = None
    kind: str = field(default="chain", init=False)

    def arch_strings(self) -> list[list[str]]:
        """The timm EfficientNet-builder arch definition."""
        return [[b.to_arch_string() for b in stage] for stage in self.stages]

    @classmethod
    def from_arch_strings(
        cls,
        arch: Iterable[Iterable[str]],
        name: str | None = None,
        network: ChainNetwork | None = None,
        source: str = "<arch>",
    ) -> "ChainGenotype":
        stages = []
        for i, stage in enumerate(arch):
            stages.append(tuple(parse_arch_string(s, f"arch[{i}][{j}]", source) for j, s in enumerate(stage)))
        g = cls(stages=tuple(stages), network=network or ChainNetwork(), name=name)
        _validate_chain(g, source)
        return g

    def __str__(self) -> str:
        lines = [f"chain genotype {self.name or ''}".rstrip()]
        for i, stage in enumerate(self.arch_strings()):
            lines.append(f"  stage {i}: " + ", ".join(stage))
        return "\n".join(lines)


Genotype = Union[CellGenotype, ChainGenotype]


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


# ---------------------------------------------------------------------------
# Chain space: arch strings and choice form
# ---------------------------------------------------------------------------

_ARCH_TOKEN = re.compile(r"^([a-z]+)(\d+(?:\.\d+)?)$")


def parse_arch_string(text: str, location: str = "arch", source: str = "<arch>") -> Block:
    """Parse one timm arch string such as ``ir_r2_k5_s2_e6_c40_se0.25``."""
    if not isinstance(text, str):
        raise GenotypeError(f"found {type(text).__name__} {text!r}, expected an arch string", location, source)
    parts = text.split("_")
    btype = parts[0]
    if btype not in BLOCK_TYPES:
        raise GenotypeError(
            f"found block type {btype!r} in {text!r}, expected one of {', '.join(BLOCK_TYPES)}", location, source
        )
    values: dict[str, float] = {}
    for tok in parts[1:]:
        m = _ARCH_TOKEN.match(tok)
        if not m or m.group(1) not in ("r", "k", "s", "e", "c", "se"):
            raise GenotypeError(
                f"found token {tok!r} in {text!r}, expected r<repeats>, k<kernel>, s<stride>, e<expansion>, "
                "c<channels> or se<ratio>",
                location,
                source,
            )
        values[m.group(1)] = float(m.group(2))
    for key in ("r", "k", "s", "c"):
        if key not in values:
            raise GenotypeError(f"{text!r} lacks its '{key}' token", location, source)
    block = Block(
        type=btype,
        kernel=int(values["k"]),
        expansion=_intify(values.get("e", 1.0)),
        stride=int(values["s"]),
        out_channels=int(values["c"]),
        se_ratio=_intify(values.get("se", 0.0)),
        repeats=int(values["r"]),
    )
    _validate_block(block, location, source)
    return block


def _intify(x: float) -> float:
    return int(x) if float(x).is_integer() else x


def _validate_block(b: Block, loc: str, src: str) -> None:
    if b.type not in BLOCK_TYPES:
        raise GenotypeError(f"found type {b.type!r}, expected one of {', '.join(BLOCK_TYPES)}", f"{loc}.type", src)
    if b.kernel not in (1, 3, 5, 7):
        raise GenotypeError(f"found kernel {b.kernel}, expected 1, 3, 5 or 7", f"{loc}.kernel", src)
    if b.stride not in (1, 2):
        raise GenotypeError(f"found stride {b.stride}, expected 1 or 2", f"{loc}.stride", src)
    if not (b.expansion >= 1):
        raise GenotypeError(f"found expansion {b.expansion}, expected a number >= 1", f"{loc}.expansion", src)
    if b.out_channels < 1:
        raise GenotypeError(f"found out_channels {b.out_channels}, expected a positive integer", f"{loc}.out_channels", src)
    if not (0 <= b.se_ratio < 1):
        raise GenotypeError(f"found se_ratio {b.se_ratio}, expected 0 <= se_ratio < 1", f"{loc}.se_ratio", src)
    if b.repeats < 1:
        raise GenotypeError(f"found repeats {b.repeats}, expected a positive integer", f"{loc}.repeats", src)


def _validate_chain(g: ChainGenotype, src: str) -> None:
    if not g.stages:
        raise GenotypeError("found no stages, expected at least one stage of blocks", "stages", src)
    for i, stage in enumerate(g.stages):
        if not stage:
            raise GenotypeError("found an empty stage, expected at least one block", f"stages[{i}]", src)
        for j, b in enumerate(stage):
            _validate_block(b, f"stages[{i}][{j}]", src)


def base_arch(name: str) -> list[list[str]]:
    """The base architectures of the chain space (implementation notes, section 3)."""
    stem = ["ds_r1_k3_s1_e1_c16_se0.25"]
    head = ["cn_r1_k1_s1_c960"]

    def stage(n: int, c: int, first_stride: int) -> list[str]:
        return [f"ir_r1_k3_s{first_stride if j == 0 else 1}_e4_c{c}_se0.25" for j in range(n)]

    if name == "cdarts_b_base":
        stage3 = stage(3, 80, 2) + ["ir_r2_k3_s1_e4_c80_se0.25"]
        return [stem, stage(4, 24, 2), stage(4, 40, 2), stage3, stage(4, 96, 1), stage(4, 192, 2), head]
    if name == "cdarts_a_base":
        return [stem, stage(1, 24, 2), stage(2, 40, 2), stage(3, 80, 2), stage(4, 96, 1), stage(3, 192, 2), head]
    raise GenotypeError(f"found base {name!r}, expected 'cdarts_a_base' or 'cdarts_b_base' or a list of stages", "base")


def apply_choices(
    base: list[list[str]], choices: list[list[int]], source: str = "<genotype>"
) -> list[list[str]]:
    """Apply per-block (kernel, expansion) choice indices to a base arch.

    Stages 1 .. n-2 are searchable; the first and last stages are fixed, and a
    searchable stage of a single block keeps its base block.
    """
    if not isinstance(choices, list) or len(choices) != len(base):
        found = len(choices) if isinstance(choices, list) else type(choices).__name__
        raise GenotypeError(f"found {found} stages of choices, expected {len(base)} (one per base stage)", "choices", source)
    out = []
    for i, (stage, stage_choices) in enumerate(zip(base, choices)):
        loc = f"choices[{i}]"
        if not isinstance(stage_choices, list) or len(stage_choices) != len(stage):
            found = len(stage_choices) if isinstance(stage_choices, list) else repr(stage_choices)
            raise GenotypeError(f"found {found} choices, expected {len(stage)} (one per base block)", loc, source)
        new_stage = []
        for j, (arch, idx) in enumerate(zip(stage, stage_choices)):
            if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < len(CHAIN_CHOICES):
                raise GenotypeError(
                    f"found {idx!r}, expected a choice index 0..{len(CHAIN_CHOICES) - 1}", f"{loc}[{j}]", source
                )
            block = parse_arch_string(arch, f"base[{i}][{j}]", source)
            searchable = is_searchable_block(i, len(base), len(stage), block.type)
            if searchable:
                kernel, expansion = CHAIN_CHOICES[idx]
                block = replace(block, kernel=kernel, expansion=expansion)
            new_stage.append(block.to_arch_string())
        out.append(new_stage)
    return out


# ---------------------------------------------------------------------------
# Cell space: validation and legacy parsing
# ---------------------------------------------------------------------------


def _check_int(value: Any, loc: str, src: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GenotypeError(f"found {value!r}, expected {what}", loc, src)
    return value


def _parse_cell(nodes: Any, concat: Any, loc: str, src: str) -> Cell:
    if not isinstance(nodes, (list, tuple)) or not nodes:
        raise GenotypeError(f"found {_show(nodes)}, expected a non-empty list of nodes", loc, src)
    parsed_nodes = []
    for i, node in enumerate(nodes):
        nloc = f"{loc}[{i}]"
        node_id = i + 2
        if not isinstance(node, (list, tuple)) or len(node) != 2:
            raise GenotypeError(
                f"found {_show(node)}, expected 2 edges [operation, input] into node {node_id}", nloc, src
            )
        edges = []
        for e, edge in enumerate(node):
            eloc = f"{nloc}[{e}]"
            if not isinstance(edge, (list, tuple)) or len(edge) != 2:
                raise GenotypeError(f"found {_show(edge)}, expected a pair [operation, input_index]", eloc, src)
            op, inp = edge
            if op == "none":
                raise GenotypeError(
                    "found 'none', which exists only during search; expected one of " + ", ".join(CELL_OPS),
                    f"{eloc}[0]",
                    src,
                )
            if op not in CELL_OPS:
                raise GenotypeError(f"found operation {op!r}, expected one of " + ", ".join(CELL_OPS), f"{eloc}[0]", src)
            _check_int(inp, f"{eloc}[1]", src, f"an input index 0..{node_id - 1}")
            if not 0 <= inp < node_id:
                raise GenotypeError(
                    f"found input {inp}, expected 0..{node_id - 1} (node {node_id} may read the two cell inputs "
                    "and earlier nodes)",
                    f"{eloc}[1]",
                    src,
                )
            edges.append((op, inp))
        if edges[0][1] == edges[1][1]:
            raise GenotypeError(
                f"found two edges from input {edges[0][1]} into node {node_id}, expected distinct inputs", nloc, src
            )
        parsed_nodes.append(tuple(edges))
    cloc = loc + "_concat"
    if not isinstance(concat, (list, tuple)) or not concat:
        raise GenotypeError(f"found {_show(concat)}, expected a non-empty list of node indices", cloc, src)
    last = len(parsed_nodes) + 1
    seen = set()
    for k, idx in enumerate(concat):
        _check_int(idx, f"{cloc}[{k}]", src, f"a node index 0..{last}")
        if not 0 <= idx <= last:
            raise GenotypeError(f"found node {idx}, expected 0..{last}", f"{cloc}[{k}]", src)
        if idx in seen:
            raise GenotypeError(f"found node {idx} twice, expected distinct indices", f"{cloc}[{k}]", src)
        seen.add(idx)
    return Cell(nodes=tuple(parsed_nodes), concat=tuple(concat))


def _show(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, str, int, float, type(None))) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _LegacyParser:
    """Reads ``Genotype(normal=..., normal_concat=range(2, 6), ...)`` as data via ``ast``."""

    FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")

    def __init__(self, source: str, location: str) -> None:
        self.source = source
        self.location = location

    def error(self, problem: str, where: str = "") -> GenotypeError:
        return GenotypeError(problem, self.location + (f".{where}" if where else ""), self.source)

    def parse(self, text: str) -> CellStage:
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise self.error(f"found text that is not a Genotype(...) expression ({exc.msg}), expected "
                             "Genotype(normal=[...], normal_concat=..., reduce=[...], reduce_concat=...)") from None
        call = tree.body
        if not (isinstance(call, ast.Call) and _call_name(call) == "Genotype"):
            raise self.error("found an expression that is not Genotype(...), expected Genotype(normal=..., ...)")
        values: dict[str, ast.AST] = {}
        for name, arg in zip(self.FIELDS, call.args):
            values[name] = arg
        for kw in call.keywords:
            if kw.arg not in self.FIELDS:
                raise self.error(f"found field {kw.arg!r}, expected only " + ", ".join(self.FIELDS))
            values[kw.arg] = kw.value
        missing = [f for f in self.FIELDS if f not in values]
        if missing:
            raise self.error("missing field(s) " + ", ".join(missing))
        cells = {}
        for kind in ("normal", "reduce"):
            nodes = self._nodes(values[kind], kind)
            concat = self._concat(values[kind + "_concat"], kind + "_concat")
            cells[kind] = _parse_cell(nodes, concat, f"{self.location}.{kind}", self.source)
        return CellStage(normal=cells["normal"], reduce=cells["reduce"])

    def _nodes(self, node: ast.AST, where: str) -> list:
        try:
            value = ast.literal_eval(node)
        except ValueError:
            raise self.error("found a non-literal value, expected a list of (operation, input) pairs", where) from None
        if isinstance(value, (list, tuple)) and value and all(_is_pair(v) for v in value):
            # Original DARTS flat form: 2 edges per node, in node order.
            if len(value) % 2:
                raise self.error(f"found {len(value)} flat (operation, input) pairs, expected an even number", where)
            return [[value[i], value[i + 1]] for i in range(0, len(value), 2)]
        return value

    def _concat(self, node: ast.AST, where: str) -> list[int]:
        if isinstance(node, ast.Call) and _call_name(node) == "range":
            try:
                args = [ast.literal_eval(a) for a in node.args]
            except ValueError:
                raise self.error("found range() with non-literal arguments, expected range(a, b)", where) from None
            if not 1 <= len(args) <= 3 or not all(isinstance(a, int) for a in args) or node.keywords:
                raise self.error("found a malformed range(), expected range(a, b)", where)
            return list(range(*args))
        try:
            value = ast.literal_eval(node)
        except ValueError:
            raise self.error("found a non-literal value, expected range(a, b) or a list of node indices", where) from None
        return list(value) if isinstance(value, (list, tuple)) else value


def _call_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):  # e.g. genotypes.Genotype(...)
        return func.attr
    return None


def _is_pair(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 2 and isinstance(v[0], str)


# ---------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------


def from_dict(doc: Any, source: str = "<genotype>") -> Genotype:
    """Build a genotype from a parsed JSON document (current or legacy form)."""
    if isinstance(doc, str):
        stage = _LegacyParser(source, "genotype").parse(doc)
        return CellGenotype(stages=(stage,))
    if not isinstance(doc, dict):
        raise GenotypeError(f"found a JSON {type(doc).__name__}, expected an object", "", source)
    if "format" not in doc:
        if doc and all(re.fullmatch(r"\d+", str(k)) for k in doc):
            return _from_legacy_stages(doc, source)
        if "arch" in doc or "base" in doc:
            return _chain_from_dict({**doc, "kind": "chain"}, source)
        raise GenotypeError(
            f"found an object without 'format', expected \"format\": \"{FORMAT}\" or a legacy "
            "{\"0\": \"Genotype(...)\", ...} object",
            "format",
            source,
        )
    if doc["format"] != FORMAT:
        raise GenotypeError(f"found format {doc['format']!r}, expected {FORMAT!r}", "format", source)
    if doc.get("version") != VERSION:
        raise GenotypeError(f"found version {doc.get('version')!r}, expected {VERSION}", "version", source)
    kind = doc.get("kind")
    if kind == "cell":
        return _cell_from_dict(doc, source)
    if kind == "chain":
        return _chain_from_dict(doc, source)
    raise GenotypeError(f"found kind {kind!r}, expected 'cell' or 'chain'", "kind", source)


def _from_legacy_stages(doc: dict, source: str) -> CellGenotype:
    keys = sorted(doc, key=int)
    if [int(k) for k in keys] != list(range(len(keys))):
        raise GenotypeError(f"found stage keys {keys}, expected consecutive keys \"0\", \"1\", ...", "", source)
    stages = []
    for k in keys:
        if not isinstance(doc[k], str):
            raise GenotypeError(f"found {_show(doc[k])}, expected a \"Genotype(...)\" string", k, source)
        stages.append(_LegacyParser(source, f"[{k!r}]").parse(doc[k]))
    return CellGenotype(stages=tuple(stages))


_ALLOWED_CELL_KEYS = {"format", "version", "kind", "name", "description", "stages", "network"}
_ALLOWED_CHAIN_KEYS = {"format", "version", "kind", "name", "description", "stages", "network", "arch", "base", "choices"}


def _check_keys(doc: dict, allowed: set, loc: str, src: str) -> None:
    extra = sorted(set(doc) - allowed)
    if extra:
        raise GenotypeError(f"found unknown key {extra[0]!r}, expected only " + ", ".join(sorted(allowed)), loc or extra[0], src)


def _opt_str(doc: dict, key: str, src: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise GenotypeError(f"found {_show(value)}, expected a string", key, src)
    return value


def _cell_from_dict(doc: dict, src: str) -> CellGenotype:
    _check_keys(doc, _ALLOWED_CELL_KEYS, "", src)
    stages_doc = doc.get("stages")
    if not isinstance(stages_doc, list) or not stages_doc:
        raise GenotypeError(f"found {_show(stages_doc)}, expected a non-empty list of stages", "stages", src)
    stages = []
    for i, st in enumerate(stages_doc):
        loc = f"stages[{i}]"
        if not isinstance(st, dict):
            raise GenotypeError(f"found {_show(st)}, expected an object with normal/reduce cells", loc, src)
        _check_keys(st, {"normal", "normal_concat", "reduce", "reduce_concat"}, "", src)
        for key in ("normal", "normal_concat", "reduce", "reduce_concat"):
            if key not in st:
                raise GenotypeError(f"missing {key!r}", f"{loc}.{key}", src)
        stages.append(
            CellStage(
                normal=_parse_cell(st["normal"], st["normal_concat"], f"{loc}.normal", src),
                reduce=_parse_cell(st["reduce"], st["reduce_concat"], f"{loc}.reduce", src),
            )
        )
    net = doc.get("network", {})
    if not isinstance(net, dict):
        raise GenotypeError(f"found {_show(net)}, expected an object", "network", src)
    _check_keys(net, set(CellNetwork.__dataclass_fields__), "network", src)
    layout = net.get("layout")
    if layout is not None and layout not in LAYOUTS:
        raise GenotypeError(f"found layout {layout!r}, expected 'cifar' or 'imagenet'", "network.layout", src)
    for key in ("width", "cells", "num_classes", "input_size"):
        if net.get(key) is not None and (_check_int(net[key], f"network.{key}", src, "a positive integer") < 1):
            raise GenotypeError(f"found {net[key]}, expected a positive integer", f"network.{key}", src)
    return CellGenotype(
        stages=tuple(stages),
        network=CellNetwork(**net),
        name=_opt_str(doc, "name", src),
        description=_opt_str(doc, "description", src),
    )


def _chain_from_dict(doc: dict, src: str) -> ChainGenotype:
    _check_keys(doc, _ALLOWED_CHAIN_KEYS, "", src)
    net_doc = doc.get("network", {})
    if not isinstance(net_doc, dict):
        raise GenotypeError(f"found {_show(net_doc)}, expected an object", "network", src)
    _check_keys(net_doc, set(ChainNetwork.__dataclass_fields__), "network", src)
    for key, value in net_doc.items():
        if value is not None and _check_int(value, f"network.{key}", src, "a positive integer") < 1:
            raise GenotypeError(f"found {value}, expected a positive integer", f"network.{key}", src)
    network = ChainNetwork(**net_doc)
    name = _opt_str(doc, "name", src)
    forms = [k for k in ("stages", "arch", "base") if k in doc]
    if len(forms) != 1:
        raise GenotypeError(
            f"found {forms or 'none'} of 'stages', 'arch', 'base', expected exactly one", "stages", src
        )
    if "base" in doc:
        base = doc["base"]
        if isinstance(base, str):
            base = base_arch(base) if base in ("cdarts_a_base", "cdarts_b_base") else None
            if base is None:
                raise GenotypeError(
                    f"found base {doc['base']!r}, expected 'cdarts_a_base', 'cdarts_b_base' or a list of stages",
                    "base",
                    src,
                )
        if not isinstance(base, list) or not all(isinstance(s, list) for s in base):
            raise GenotypeError(f"found {_show(base)}, expected a list of stages of arch strings", "base", src)
        if "choices" not in doc:
            raise GenotypeError("missing 'choices' (per-block choice indices) next to 'base'", "choices", src)
        arch = apply_choices(base, doc["choices"], src)
    elif "arch" in doc:
        arch = doc["arch"]
        if not isinstance(arch, list) or not all(isinstance(s, list) for s in arch):
            raise GenotypeError(f"found {_show(arch)}, expected a list of stages of arch strings", "arch", src)
    else:
        if "choices" in doc:
            raise GenotypeError("found 'choices' without 'base'", "choices", src)
        stages_doc = doc["stages"]
        if not isinstance(stages_doc, list) or not stages_doc:
            raise GenotypeError(f"found {_show(stages_doc)}, expected a non-empty list of stages", "stages", src)
        stages = []
        for i, stage in enumerate(stages_doc):
            if not isinstance(stage, list) or not stage:
                raise GenotypeError(f"found {_show(stage)}, expected a non-empty list of blocks", f"stages[{i}]", src)
            stages.append(tuple(_block_from_dict(b, f"stages[{i}][{j}]", src) for j, b in enumerate(stage)))
        g = ChainGenotype(stages=tuple(stages), network=network, name=name, description=_opt_str(doc, "description", src))
        _validate_chain(g, src)
        return g
    g = ChainGenotype.from_arch_strings(arch, name=name, network=network, source=src)
    return replace(g, description=_opt_str(doc, "description", src))


_BLOCK_KEYS = ("type", "kernel", "expansion", "stride", "out_channels", "se_ratio", "repeats")


def _block_from_dict(doc: Any, loc: str, src: str) -> Block:
    if isinstance(doc, str):
        return parse_arch_string(doc, loc, src)
    if not isinstance(doc, dict):
        raise GenotypeError(f"found {_show(doc)}, expected a block object or an arch string", loc, src)
    _check_keys(doc, set(_BLOCK_KEYS), loc, src)
    for key in ("type", "kernel", "stride", "out_channels"):
        if key not in doc:
            raise GenotypeError(f"missing {key!r}", f"{loc}.{key}", src)
    if doc["type"] not in BLOCK_TYPES:
        raise GenotypeError(f"found type {doc['type']!r}, expected one of {', '.join(BLOCK_TYPES)}", f"{loc}.type", src)
    for key in ("kernel", "stride", "out_channels", "repeats"):
        if key in doc:
            _check_int(doc[key], f"{loc}.{key}", src, "an integer")
    for key in ("expansion", "se_ratio"):
        if key in doc and (isinstance(doc[key], bool) or not isinstance(doc[key], (int, float))):
            raise GenotypeError(f"found {_show(doc[key])}, expected a number", f"{loc}.{key}", src)
    block = Block(
        type=doc["type"],
        kernel=doc["kernel"],
        expansion=_intify(doc.get("expansion", 1)),
        stride=doc["stride"],
        out_channels=doc["out_channels"],
        se_ratio=_intify(doc.get("se_ratio", 0)),
        repeats=doc.get("repeats", 1),
    )
    _validate_block(block, loc, src)
    return block


def to_dict(g: Genotype) -> dict:
    """The canonical JSON-ready form of a genotype."""
    doc: dict[str, Any] = {"format": FORMAT, "version": VERSION, "kind": g.kind}
    if g.name is not None:
        doc["name"] = g.name
    if g.description is not None:
        doc["description"] = g.description
    if isinstance(g, CellGenotype):
        doc["stages"] = [
            {
                "normal": [[list(e) for e in node] for node in st.normal.nodes],
                "normal_concat": list(st.normal.concat),
                "reduce": [[list(e) for e in node] for node in st.reduce.nodes],
                "reduce_concat": list(st.reduce.concat),
            }
            for st in g.stages
        ]
        net = {k: v for k, v in g.network.__dict__.items() if v is not None}
    else:
        doc["stages"] = [[{k: getattr(b, k) for k in _BLOCK_KEYS} for b in stage] for stage in g.stages]
        net = {k: v for k, v in g.network.__dict__.items() if v is not None}
    if net:
        doc["network"] = net
    return doc


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


def loads(text: str, source: str = "<string>") -> Genotype:
    """Parse genotype text: JSON (current or legacy) or a bare ``Genotype(...)``."""
    stripped = text.strip()
    if not stripped:
        raise GenotypeError("found an empty document, expected a genotype JSON object", "", source)
    if stripped.startswith("{") or stripped.startswith('"') or stripped.startswith("["):
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise GenotypeError(
                f"found invalid JSON ({exc.msg}), expected a genotype JSON object", f"line {exc.lineno} column {exc.colno}", source
            ) from None
        return from_dict(doc, source)
    return from_dict(stripped, source)


def zoo_names() -> list[str]:
    """Names of the built-in genotypes."""
    folder = resources.files("cdarts_deploy") / "zoo"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load(path_or_name: str | os.PathLike) -> Genotype:
    """Load a genotype from a file path or a built-in zoo name."""
    text_name = str(path_or_name)
    path = Path(path_or_name)
    if not path.exists() and re.fullmatch(r"[A-Za-z0-9_]+", text_name):
        if text_name in zoo_names():
            zoo_file = resources.files("cdarts_deploy") / "zoo" / f"{text_name}.json"
            return loads(zoo_file.read_text(encoding="utf-8"), f"zoo:{text_name}")
        raise GenotypeError(
            f"no file or zoo genotype named {text_name!r}; expected a path or one of: " + ", ".join(zoo_names()),
            "",
            text_name,
        )
    if not path.is_file():
        raise GenotypeError("file not found; expected a genotype JSON file or a zoo name", "", text_name)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GenotypeError(f"cannot read the file ({exc}); expected a UTF-8 genotype JSON file", "", text_name) from None
    g = loads(text, text_name)
    if g.name is None:
        g = replace(g, name=path.stem)
    return g


def save(g: Genotype, path: str | os.PathLike) -> None:
    """Write the canonical JSON atomically (temporary file, then rename)."""
    write_text(path, dumps(g))
