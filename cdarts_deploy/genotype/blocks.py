"""One block of the chain kind: the :class:`Block` dataclass, its timm arch string both ways, and its checks.

Below :mod:`~cdarts_deploy.genotype.model` (whose :class:`ChainGenotype` parses arch strings) and
:mod:`~cdarts_deploy.genotype.chain` (chain documents), so that both import it at the top.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cdarts_deploy.genotype import limits
from cdarts_deploy.genotype.errors import GenotypeError, json_preview, repr_preview
from cdarts_deploy.genotype.fields import bounded_int, check_count, check_int, check_keys, check_number

BLOCK_TYPES = ("ds", "ir", "cn")
BLOCK_KEYS = ("type", "kernel", "expansion", "stride", "out_channels", "se_ratio", "repeats")


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


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


_ARCH_TOKEN = re.compile(r"^([a-z]+)(\d+(?:\.\d+)?)$")
_INTEGER_TOKENS = ("r", "k", "s", "c")


def parse_arch_string(text: str, location: str = "arch", source: str = "<arch>") -> Block:
    """Parse one timm arch string such as ``ir_r2_k5_s2_e6_c40_se0.25``."""
    if not isinstance(text, str):
        found = f"{type(text).__name__} {repr_preview(text)}"
        raise GenotypeError(f"found {found}, expected an arch string", location, source)
    if len(text) > limits.MAX_ARCH_STRING_CHARS:
        raise GenotypeError(
            f"found an arch string of {len(text)} characters, expected at most {limits.MAX_ARCH_STRING_CHARS}",
            location,
            source,
        )
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
    for key in _INTEGER_TOKENS:
        if key not in values:
            raise GenotypeError(f"{text!r} lacks its '{key}' token", location, source)
        if not values[key].is_integer():
            raise GenotypeError(f"found {key}{values[key]} in {text!r}, expected a whole number", location, source)
    block = Block(
        type=btype,
        kernel=int(values["k"]),
        expansion=plain_number(values.get("e", 1.0)),
        stride=int(values["s"]),
        out_channels=int(values["c"]),
        se_ratio=plain_number(values.get("se", 0.0)),
        repeats=int(values["r"]),
    )
    validate_block(block, location, source)
    return block


def plain_number(x: float) -> float:
    """``6.0`` as ``6``; other numbers as they are."""
    # 6.0 and 6 are the same expansion; keep ints as they are (a huge int does not fit a float).
    if isinstance(x, int):
        return x
    return int(x) if x.is_integer() else x


def validate_block(b: Block, loc: str, src: str) -> None:
    """Check every field of a block against the chain space and :mod:`limits`."""
    if b.type not in BLOCK_TYPES:
        raise GenotypeError(
            f"found type {repr_preview(b.type)}, expected one of {', '.join(BLOCK_TYPES)}", f"{loc}.type", src
        )
    if b.kernel not in (1, 3, 5, 7):
        raise GenotypeError(f"found kernel {repr_preview(b.kernel)}, expected 1, 3, 5 or 7", f"{loc}.kernel", src)
    if b.stride not in (1, 2):
        raise GenotypeError(f"found stride {repr_preview(b.stride)}, expected 1 or 2", f"{loc}.stride", src)
    check_number(b.expansion, f"{loc}.expansion", src)
    if not 1 <= b.expansion <= limits.MAX_EXPANSION:
        found = repr_preview(b.expansion)
        expected = f"a number 1..{limits.MAX_EXPANSION}"
        raise GenotypeError(f"found expansion {found}, expected {expected}", f"{loc}.expansion", src)
    bounded_int(b.out_channels, 1, limits.MAX_CHANNELS, f"{loc}.out_channels", src, "out_channels")
    check_number(b.se_ratio, f"{loc}.se_ratio", src)
    if not 0 <= b.se_ratio < 1:
        found = repr_preview(b.se_ratio)
        raise GenotypeError(f"found se_ratio {found}, expected 0 <= se_ratio < 1", f"{loc}.se_ratio", src)
    bounded_int(b.repeats, 1, limits.MAX_REPEATS, f"{loc}.repeats", src, "repeats")


def validate_stages(stages: tuple[tuple[Block, ...], ...], src: str) -> None:
    """Check the stages of a chain genotype: non-empty, within :mod:`limits`, every block valid."""
    if not stages:
        raise GenotypeError("found no stages, expected at least one stage of blocks", "stages", src)
    check_count(stages, limits.MAX_STAGES, "stages", "stages", src)
    for i, stage in enumerate(stages):
        if not stage:
            raise GenotypeError("found an empty stage, expected at least one block", f"stages[{i}]", src)
        check_count(stage, limits.MAX_BLOCKS_PER_STAGE, "blocks", f"stages[{i}]", src)
        for j, b in enumerate(stage):
            validate_block(b, f"stages[{i}][{j}]", src)
    total = sum(b.repeats for stage in stages for b in stage)
    if total > limits.MAX_CHAIN_BLOCKS:
        raise GenotypeError(
            f"found {total} blocks (repeats counted), expected at most {limits.MAX_CHAIN_BLOCKS}", "stages", src
        )


def block_from_dict(doc: Any, loc: str, src: str) -> Block:
    """A block given as an object with :data:`BLOCK_KEYS` or as one arch string."""
    if isinstance(doc, str):
        return parse_arch_string(doc, loc, src)
    if not isinstance(doc, dict):
        raise GenotypeError(f"found {json_preview(doc)}, expected a block object or an arch string", loc, src)
    check_keys(doc, BLOCK_KEYS, loc, src)
    for key in ("type", "kernel", "stride", "out_channels"):
        if key not in doc:
            raise GenotypeError(f"missing {key!r}", f"{loc}.{key}", src)
    if doc["type"] not in BLOCK_TYPES:
        raise GenotypeError(
            f"found type {repr_preview(doc['type'])}, expected one of {', '.join(BLOCK_TYPES)}", f"{loc}.type", src
        )
    for key in ("kernel", "stride", "out_channels", "repeats"):
        if key in doc:
            check_int(doc[key], f"{loc}.{key}", src, "an integer")
    for key in ("expansion", "se_ratio"):
        if key in doc:
            check_number(doc[key], f"{loc}.{key}", src)
    block = Block(
        type=doc["type"],
        kernel=doc["kernel"],
        expansion=plain_number(doc.get("expansion", 1)),
        stride=doc["stride"],
        out_channels=doc["out_channels"],
        se_ratio=plain_number(doc.get("se_ratio", 0)),
        repeats=doc.get("repeats", 1),
    )
    validate_block(block, loc, src)
    return block
