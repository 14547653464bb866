"""Latency tables of the chain space: plain, versioned JSON read within bounds and refused when foreign.

A table holds the measured latency (milliseconds, median of timed runs after warm-up) of every
(block position, candidate) of a chain base on one runtime, plus the fixed parts (stem, fixed
blocks, head), each measured in isolation at the input shape it has inside the network.  The
latency of a child is predicted additively: the fixed parts plus the chosen candidate of every
searchable block, optionally through a linear correction ``scale * sum + offset_ms`` fitted on
children measured end to end (isolated parts run with warm caches, each pays a call overhead and
misses cross-part fusion; the correction absorbs what is common to every child, see
:func:`cdarts_deploy.latency_stats.fit_correction`).

Document (``"format": "cdarts-latency-table"``, ``"version": 1``)::

    runtime      onnxruntime-cpu | tensorrt-fp16 | torch-cuda
    space        chain
    input_size   side of the square input;  batch: images per run
    base         the base architecture's arch strings;  network: num_classes, stem_channels, head_channels
    candidates   candidate names, in CHAIN_CHOICES order (k<kernel>_e<expansion>)
    blocks       [{stage, index, input_shape [N, C, H, W], ms: {candidate: ms}}]  (index: block in the timm stage)
    fixed        [{name, input_shape, ms}]  stem, fixed blocks (``blocks.<stage>.<index>``), head
    conditions   machine, threads, precision, library versions, load, timing settings
    correction   null, or {mode, scale, offset_ms, children, spearman, raw_ms, measured_ms, before, after}

A block's ``index`` counts physical blocks: an arch string with repeats (``ir_r2_...``) covers two
positions that share one choice.  Pure Python: no numpy, no torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from cdarts_deploy import bounded_json
from cdarts_deploy.atomic_files import write_text
from cdarts_deploy.errors import UserError
from cdarts_deploy.genotype import CHAIN_CHOICES, ChainGenotype, is_searchable_block, parse_arch_string

__all__ = [
    "FORMAT", "VERSION", "RUNTIMES", "CANDIDATES", "LatencyTableError", "BlockEntry", "FixedEntry",
    "LatencyTable", "from_dict", "load", "save", "dumps", "searchable_positions", "genotype_candidates",
    "parse_duration_ms", "describe",
]

FORMAT = "cdarts-latency-table"
VERSION = 1
RUNTIMES = ("onnxruntime-cpu", "tensorrt-fp16", "torch-cuda")
SPACES = ("chain",)
CANDIDATES: tuple[str, ...] = tuple(f"k{k}_e{e}" for k, e in CHAIN_CHOICES)
TOP_KEYS = ("format", "version", "runtime", "space", "input_size", "batch", "base", "network", "candidates",
            "blocks", "fixed", "conditions", "correction")
NETWORK_KEYS = ("num_classes", "stem_channels", "head_channels")
MAX_BYTES = 4 << 20
#: Largest latency entry (and |offset|) in milliseconds: 1000 s per block is no measurement, and sums of
#: larger finite values overflow to inf.
MAX_MS = 1e6
#: Largest integer field (sizes, shapes, classes, widths, positions).
MAX_INT = 1 << 20
#: Largest correction scale.
MAX_SCALE = 1e3
REMEASURE = "measure a table for it with cdarts-latency-table"


class LatencyTableError(UserError):
    """A latency table that cannot be read, or that belongs to another runtime, space, base or input."""


@dataclass(frozen=True)
class BlockEntry:
    stage: int
    index: int
    input_shape: tuple[int, ...]
    ms: dict[str, float]


@dataclass(frozen=True)
class FixedEntry:
    name: str
    input_shape: tuple[int, ...]
    ms: float


@dataclass
class LatencyTable:
    runtime: str
    space: str
    input_size: int
    batch: int
    base: list[list[str]]
    network: dict[str, int]
    blocks: list[BlockEntry]
    fixed: list[FixedEntry]
    conditions: dict[str, Any] = field(default_factory=dict)
    correction: dict[str, Any] | None = None
    source: str = "<table>"

    # -- prediction ---------------------------------------------------------------------------------
    def block_ms(self, stage: int, index: int, candidate: str) -> float:
        entry = self._by_position().get((stage, index))
        if entry is None:
            raise LatencyTableError(f"{self.source}: no block at stage {stage} index {index}; {REMEASURE}")
        return entry.ms[candidate]

    def fixed_ms(self) -> float:
        return math.fsum(f.ms for f in self.fixed)

    @property
    def scale(self) -> float:
        return float(self.correction["scale"]) if self.correction else 1.0

    @property
    def offset_ms(self) -> float:
        return float(self.correction["offset_ms"]) if self.correction else 0.0

    def corrected(self, raw_ms: float) -> float:
        """``scale * raw + offset`` (the identity without a correction)."""
        return self.scale * raw_ms + self.offset_ms

    def raw_ms(self, candidates: Mapping[tuple[int, int], str]) -> float:
        """Sum of the table for one child: fixed parts plus ``candidates[(stage, index)]`` of every block."""
        missing = [p for p in self._by_position() if p not in candidates]
        if missing:
            raise LatencyTableError(f"{self.source}: the child has no choice for block {missing[0]}; "
                                    "it is not a child of this table's base")
        return self.fixed_ms() + math.fsum(self.block_ms(s, i, c) for (s, i), c in candidates.items())

    def predict_ms(self, genotype: ChainGenotype) -> float:
        """Predicted latency of ``genotype`` (a child of this table's base): corrected sum of the table."""
        return self.corrected(self.raw_ms(genotype_candidates(genotype)))

    def _by_position(self) -> dict[tuple[int, int], BlockEntry]:
        return {(b.stage, b.index): b for b in self.blocks}

    # -- compatibility ------------------------------------------------------------------------------
    def check(self, *, runtime: str | None = None, space: str | None = None, input_size: int | None = None,
              batch: int | None = None, base: Sequence[Sequence[str]] | None = None,
              network: Mapping[str, int] | None = None,
              block_shapes: Mapping[tuple[int, int], Sequence[int]] | None = None) -> "LatencyTable":
        """This table if it was measured for what is given; otherwise one :class:`LatencyTableError` line."""
        src = self.source
        if runtime is not None and runtime != self.runtime:
            raise LatencyTableError(f"{src}: measured on {self.runtime}, this run needs {runtime}; "
                                    f"{REMEASURE} --runtime {runtime}")
        if space is not None and space != self.space:
            raise LatencyTableError(f"{src}: a table of the {self.space} space, this run searches the {space} space")
        if input_size is not None and input_size != self.input_size:
            raise LatencyTableError(f"{src}: measured at input size {self.input_size}, this run uses {input_size}; "
                                    f"{REMEASURE} --input-size {input_size}")
        if batch is not None and batch != self.batch:
            raise LatencyTableError(f"{src}: measured at batch {self.batch}, expected batch {batch}")
        if base is not None and [list(s) for s in base] != self.base:
            raise LatencyTableError(f"{src}: measured for another base architecture; {REMEASURE} --base of this run")
        if network is not None:
            for key in NETWORK_KEYS:
                if key in network and int(network[key]) != self.network[key]:
                    flag = key.replace("_", "-")
                    raise LatencyTableError(f"{src}: measured with {key} {self.network[key]}, this run has "
                                            f"{network[key]}; {REMEASURE} --{flag} {network[key]}")
        if block_shapes is not None:
            have = {p: list(b.input_shape) for p, b in self._by_position().items()}
            want = {tuple(p): [int(v) for v in s] for p, s in block_shapes.items()}
            if set(have) != set(want):
                extra = sorted(set(have) ^ set(want))[0]
                raise LatencyTableError(f"{src}: its searchable blocks differ from this run's (block at stage "
                                        f"{extra[0]} index {extra[1]}); {REMEASURE} for this base")
            for p in sorted(want):
                if have[p] != want[p]:
                    raise LatencyTableError(f"{src}: block at stage {p[0]} index {p[1]} was measured with input "
                                            f"{have[p]}, in this run it gets {want[p]}; {REMEASURE} for this base "
                                            "and input size")
        return self

    # -- writing ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "runtime": self.runtime, "space": self.space,
            "input_size": self.input_size, "batch": self.batch, "base": [list(s) for s in self.base],
            "network": dict(self.network), "candidates": list(CANDIDATES),
            "blocks": [{"stage": b.stage, "index": b.index, "input_shape": list(b.input_shape),
                        "ms": {c: b.ms[c] for c in CANDIDATES}} for b in self.blocks],
            "fixed": [{"name": f.name, "input_shape": list(f.input_shape), "ms": f.ms} for f in self.fixed],
            "conditions": self.conditions, "correction": self.correction,
        }


# -- reading --------------------------------------------------------------------------------------------

def _fail(src: str, where: str, problem: str) -> LatencyTableError:
    return LatencyTableError(f"{src}: {where}: {problem}; {REMEASURE}")


def _int(value: Any, src: str, where: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_INT:
        raise _fail(src, where, f"found {value!r}, expected an integer from {low} to {MAX_INT}")
    return value


def _ms(value: Any, src: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_MS:
        raise _fail(src, where, f"found {value!r}, expected a latency in milliseconds from 0 to {MAX_MS:g}")
    return float(value)


def _shape(value: Any, src: str, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) != 4:
        raise _fail(src, where, f"found {value!r}, expected an input shape [N, C, H, W]")
    return tuple(_int(v, src, f"{where}[{i}]") for i, v in enumerate(value))


def from_dict(doc: Any, source: str = "<table>") -> LatencyTable:
    """Validate a table document; anything else is one :class:`LatencyTableError` line."""
    src = source
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise LatencyTableError(f"{src}: not a latency table (expected \"format\": \"{FORMAT}\"); {REMEASURE}")
    if doc.get("version") != VERSION:
        raise LatencyTableError(f"{src}: latency table version {doc.get('version')!r}, this build reads version "
                                f"{VERSION}; {REMEASURE}")
    unknown = sorted(set(doc) - set(TOP_KEYS))
    missing = [k for k in TOP_KEYS if k not in doc]
    if unknown or missing:
        raise _fail(src, "keys", f"found unknown {unknown} / missing {missing}")
    if doc["runtime"] not in RUNTIMES:
        raise _fail(src, "runtime", f"found {doc['runtime']!r}, expected one of {', '.join(RUNTIMES)}")
    if doc["space"] not in SPACES:
        raise _fail(src, "space", f"found {doc['space']!r}, expected one of {', '.join(SPACES)}")
    if doc["candidates"] != list(CANDIDATES):
        raise _fail(src, "candidates", f"found {doc['candidates']!r}, expected {list(CANDIDATES)}")
    base = doc["base"]
    if not (isinstance(base, list) and base and all(isinstance(s, list) and s and all(isinstance(a, str) for a in s)
                                                     for s in base)):
        raise _fail(src, "base", "expected a list of stages of arch strings")
    for i, stage in enumerate(base):
        for j, arch in enumerate(stage):
            try:
                parse_arch_string(arch, f"base[{i}][{j}]", src)
            except UserError as exc:
                raise LatencyTableError(f"{exc}; {REMEASURE}") from None
    network = doc["network"]
    if not isinstance(network, dict) or sorted(network) != sorted(NETWORK_KEYS):
        raise _fail(src, "network", f"expected an object with {', '.join(NETWORK_KEYS)}")
    network = {k: _int(network[k], src, f"network.{k}") for k in NETWORK_KEYS}
    if not isinstance(doc["blocks"], list) or not isinstance(doc["fixed"], list) or not doc["fixed"]:
        raise _fail(src, "blocks/fixed", "expected lists of entries")
    blocks, seen = [], set()
    for n, entry in enumerate(doc["blocks"]):
        where = f"blocks[{n}]"
        if not isinstance(entry, dict) or sorted(entry) != ["index", "input_shape", "ms", "stage"]:
            raise _fail(src, where, "expected {stage, index, input_shape, ms}")
        stage, index = _int(entry["stage"], src, f"{where}.stage", 0), _int(entry["index"], src, f"{where}.index", 0)
        if (stage, index) in seen:
            raise _fail(src, where, f"block at stage {stage} index {index} appears twice")
        seen.add((stage, index))
        ms = entry["ms"]
        if not isinstance(ms, dict) or sorted(ms) != sorted(CANDIDATES):
            raise _fail(src, f"{where}.ms", f"expected one latency per candidate {list(CANDIDATES)}")
        blocks.append(BlockEntry(stage, index, _shape(entry["input_shape"], src, f"{where}.input_shape"),
                                 {c: _ms(ms[c], src, f"{where}.ms.{c}") for c in CANDIDATES}))
    if sorted(seen) != sorted(_searchable_modules(base)):
        raise _fail(src, "blocks", "the block positions are not the searchable blocks of its base")
    fixed = []
    for n, entry in enumerate(doc["fixed"]):
        where = f"fixed[{n}]"
        if not isinstance(entry, dict) or sorted(entry) != ["input_shape", "ms", "name"] \
                or not isinstance(entry["name"], str):
            raise _fail(src, where, "expected {name, input_shape, ms}")
        fixed.append(FixedEntry(entry["name"], _shape(entry["input_shape"], src, f"{where}.input_shape"),
                                _ms(entry["ms"], src, f"{where}.ms")))
    input_size, batch = _int(doc["input_size"], src, "input_size", 8), _int(doc["batch"], src, "batch")
    stem = fixed[0]
    if stem.name != "stem" or list(stem.input_shape) != [batch, 3, input_size, input_size]:
        raise _fail(src, "fixed[0]", f"expected the stem with input shape {[batch, 3, input_size, input_size]}")
    if any(b.input_shape[0] != batch for b in blocks):
        raise _fail(src, "blocks", f"an input shape disagrees with batch {batch}")
    if not isinstance(doc["conditions"], dict):
        raise _fail(src, "conditions", "expected an object")
    correction = doc["correction"]
    if correction is not None:
        if not isinstance(correction, dict) or "scale" not in correction or "offset_ms" not in correction:
            raise _fail(src, "correction", "expected null or an object with scale and offset_ms")
        for key in ("scale", "offset_ms"):
            v = correction[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not abs(v) <= MAX_MS:
                raise _fail(src, f"correction.{key}", f"found {v!r}, expected a finite number")
        if not 0 < correction["scale"] <= MAX_SCALE:
            raise _fail(src, "correction.scale", f"expected a positive number up to {MAX_SCALE:g}")
    return LatencyTable(doc["runtime"], doc["space"], input_size, batch, [list(s) for s in base], network, blocks,
                        fixed, doc["conditions"], correction, source)


def load(path: str | os.PathLike) -> LatencyTable:
    """Read a table file (bounded JSON); a missing or foreign file is one :class:`LatencyTableError` line."""
    if not os.path.isfile(path):
        raise LatencyTableError(f"{path}: latency table not found; {REMEASURE}")
    try:
        doc = bounded_json.load(path, expected="a latency table", max_bytes=MAX_BYTES)
    except bounded_json.JSONInputError as exc:
        raise LatencyTableError(f"{exc}; {REMEASURE}") from None
    return from_dict(doc, str(path))


def dumps(table: LatencyTable) -> str:
    return json.dumps(table.to_dict(), indent=1) + "\n"


def save(table: LatencyTable, path: str | os.PathLike) -> None:
    write_text(path, dumps(table))


# -- the chain space's positions ---------------------------------------------------------------------------

def _searchable_modules(base: Sequence[Sequence[str]]) -> list[tuple[int, int]]:
    return [p for positions in searchable_positions(base) for p in positions[1]]


def searchable_positions(base: Sequence[Sequence[str]]) -> list[tuple[tuple[int, int], tuple[tuple[int, int], ...]]]:
    """``[((stage, arch_index), ((stage, block), ...))]``: every searchable arch string and its physical blocks."""
    out = []
    for i, stage in enumerate(base):
        module = 0
        for j, arch in enumerate(stage):
            block = parse_arch_string(arch, f"base[{i}][{j}]")
            mods = tuple((i, m) for m in range(module, module + block.repeats))
            module += block.repeats
            if is_searchable_block(i, len(base), len(stage), block.type):
                out.append(((i, j), mods))
    return out


def genotype_candidates(genotype: ChainGenotype) -> dict[tuple[int, int], str]:
    """``{(stage, block): candidate name}`` for every searchable physical block of a chain genotype."""
    stages = genotype.stages
    out: dict[tuple[int, int], str] = {}
    for i, stage in enumerate(stages):
        module = 0
        for block in stage:
            for m in range(module, module + block.repeats):
                if is_searchable_block(i, len(stages), len(stage), block.type):
                    out[(i, m)] = f"k{int(block.kernel)}_e{int(block.expansion)}"
            module += block.repeats
    return out


# -- durations ------------------------------------------------------------------------------------------

def parse_duration_ms(text: str, what: str = "--latency-budget") -> float:
    """``12ms``, ``12`` (milliseconds), ``0.012s`` or ``800us`` as milliseconds (> 0)."""
    raw = str(text).strip().lower()
    for suffix, factor in (("ms", 1.0), ("us", 1e-3), ("s", 1e3), ("", 1.0)):
        if raw.endswith(suffix):
            number = raw[: len(raw) - len(suffix)] if suffix else raw
            try:
                value = float(number) * factor
            except ValueError:
                break
            if math.isfinite(value) and value > 0:
                return value
            break
    raise LatencyTableError(f"{what} {text!r}: expected a positive duration such as 12ms, 800us or 0.012s")


def describe(table: LatencyTable, path: str | os.PathLike) -> dict[str, Any]:
    """What a result needs to say about the table it used, without the machine's path: the file's name and
    SHA-256, runtime, input, base, the machine and conditions it was measured under, and its correction."""
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    cond = table.conditions
    correction = table.correction or {}
    return {"file": os.path.basename(os.fspath(path)), "sha256": digest, "runtime": table.runtime,
            "input_shape": [table.batch, 3, table.input_size, table.input_size], "network": dict(table.network),
            "cpu": cond.get("cpu"), "threads": cond.get("threads"), "load": cond.get("load"),
            "measurement": cond.get("measurement"),
            "correction": {k: correction.get(k) for k in ("mode", "scale", "offset_ms", "children")}
            if correction else None}
