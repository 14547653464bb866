"""The chain kind (MBConv space): blocks, timm arch strings, the choice form, and chain documents.

A chain document gives its stages in one of three forms:

* ``stages`` -- block objects (or arch strings), the canonical form;
* ``arch`` -- timm arch strings (``ir_r1_k5_s2_e6_c24_se0.25``), one list per stage;
* ``base`` + ``choices`` -- a base network and one (kernel, expansion) choice index per block,
  the form the chain search writes.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Iterable

from cdarts_deploy.genotype import limits
from cdarts_deploy.genotype.bases import BASE_NAMES, base_arch
from cdarts_deploy.genotype.errors import GenotypeError, json_preview, repr_preview
from cdarts_deploy.genotype.fields import bounded_int, check_count, check_int, check_keys, check_number, optional_text
from cdarts_deploy.genotype.model import Block, ChainGenotype, ChainNetwork

#: (kernel, expansion) candidates of the chain space, indexed by choice.
CHAIN_CHOICES: tuple[tuple[int, int], ...] = ((3, 4), (3, 6), (5, 4), (5, 6), (7, 4), (7, 6))

BLOCK_TYPES = ("ds", "ir", "cn")
BLOCK_KEYS = ("type", "kernel", "expansion", "stride", "out_channels", "se_ratio", "repeats")
CHAIN_DOC_KEYS = ("format", "version", "kind", "name", "description", "stages", "network", "arch", "base", "choices")

#: Classes and input size of a chain network when neither the caller nor the genotype says (ImageNet).
CHAIN_DEFAULTS: dict[str, int] = dict(num_classes=1000, input_size=224)

# Bounds of the network hints: (low, high) per key.
_NETWORK_BOUNDS = {
    "num_classes": (1, limits.MAX_CLASSES),
    "input_size": (limits.MIN_INPUT_SIZE, limits.MAX_INPUT_SIZE),
    "stem_channels": (1, limits.MAX_CHANNELS),
    "head_channels": (1, limits.MAX_CHANNELS),
}


def is_searchable_block(stage_index: int, num_stages: int, stage_len: int, block_type: str) -> bool:
    """Chain space: a block's (kernel, expansion) is searched in the inner stages of more than one ir block."""
    return 0 < stage_index < num_stages - 1 and stage_len > 1 and block_type == "ir"


# ---------------------------------------------------------------------------
# Blocks and arch strings
# ---------------------------------------------------------------------------

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
        expansion=_intify(values.get("e", 1.0)),
        stride=int(values["s"]),
        out_channels=int(values["c"]),
        se_ratio=_intify(values.get("se", 0.0)),
        repeats=int(values["r"]),
    )
    validate_block(block, location, source)
    return block


def _intify(x: float) -> float:
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


def validate_chain(g: ChainGenotype, src: str) -> None:
    """Check the stages of a chain genotype: non-empty, within :mod:`limits`, every block valid."""
    if not g.stages:
        raise GenotypeError("found no stages, expected at least one stage of blocks", "stages", src)
    check_count(g.stages, limits.MAX_STAGES, "stages", "stages", src)
    for i, stage in enumerate(g.stages):
        if not stage:
            raise GenotypeError("found an empty stage, expected at least one block", f"stages[{i}]", src)
        check_count(stage, limits.MAX_BLOCKS_PER_STAGE, "blocks", f"stages[{i}]", src)
        for j, b in enumerate(stage):
            validate_block(b, f"stages[{i}][{j}]", src)
    total = sum(b.repeats for stage in g.stages for b in stage)
    if total > limits.MAX_CHAIN_BLOCKS:
        raise GenotypeError(
            f"found {total} blocks (repeats counted), expected at most {limits.MAX_CHAIN_BLOCKS}", "stages", src
        )


def chain_from_arch_strings(
    arch: Iterable[Iterable[str]],
    name: str | None = None,
    network: ChainNetwork | None = None,
    source: str = "<arch>",
) -> ChainGenotype:
    """A chain genotype from a timm arch definition (see :meth:`ChainGenotype.from_arch_strings`)."""
    stages = []
    for i, stage in enumerate(arch):
        stages.append(tuple(parse_arch_string(s, f"arch[{i}][{j}]", source) for j, s in enumerate(stage)))
    g = ChainGenotype(stages=tuple(stages), network=network or ChainNetwork(), name=name)
    validate_chain(g, source)
    return g


# ---------------------------------------------------------------------------
# Choice form
# ---------------------------------------------------------------------------


def apply_choices(
    base: list[list[str]], choices: list[list[int]], source: str = "<genotype>"
) -> list[list[str]]:
    """Apply per-block (kernel, expansion) choice indices to a base arch.

    Stages 1 .. n-2 are searchable; the first and last stages are fixed, and a
    searchable stage of a single block keeps its base block.
    """
    if not isinstance(choices, list) or len(choices) != len(base):
        found = len(choices) if isinstance(choices, list) else type(choices).__name__
        raise GenotypeError(
            f"found {found} stages of choices, expected {len(base)} (one per base stage)", "choices", source
        )
    out = []
    for i, (stage, stage_choices) in enumerate(zip(base, choices)):
        loc = f"choices[{i}]"
        if not isinstance(stage_choices, list) or len(stage_choices) != len(stage):
            found = len(stage_choices) if isinstance(stage_choices, list) else repr_preview(stage_choices)
            raise GenotypeError(f"found {found} choices, expected {len(stage)} (one per base block)", loc, source)
        new_stage = []
        for j, (arch, idx) in enumerate(zip(stage, stage_choices)):
            if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < len(CHAIN_CHOICES):
                raise GenotypeError(
                    f"found {repr_preview(idx)}, expected a choice index 0..{len(CHAIN_CHOICES) - 1}",
                    f"{loc}[{j}]",
                    source,
                )
            block = parse_arch_string(arch, f"base[{i}][{j}]", source)
            if is_searchable_block(i, len(base), len(stage), block.type):
                kernel, expansion = CHAIN_CHOICES[idx]
                block = replace(block, kernel=kernel, expansion=expansion)
            new_stage.append(block.to_arch_string())
        out.append(new_stage)
    return out


# ---------------------------------------------------------------------------
# Chain documents
# ---------------------------------------------------------------------------


def chain_from_dict(doc: dict, src: str) -> ChainGenotype:
    """Validate a ``"kind": "chain"`` document (its format and version already checked)."""
    check_keys(doc, CHAIN_DOC_KEYS, "", src)
    network = _network_from_dict(doc.get("network", {}), src)
    name = optional_text(doc, "name", limits.MAX_NAME_CHARS, src)
    description = optional_text(doc, "description", limits.MAX_DESCRIPTION_CHARS, src)
    forms = [k for k in ("stages", "arch", "base") if k in doc]
    if len(forms) != 1:
        raise GenotypeError(
            f"found {forms or 'none'} of 'stages', 'arch', 'base', expected exactly one", "stages", src
        )
    if "choices" in doc and "base" not in doc:
        raise GenotypeError("found 'choices' without 'base'", "choices", src)
    if "stages" in doc:
        g = ChainGenotype(stages=_stages_from_dict(doc["stages"], src), network=network, name=name)
        validate_chain(g, src)
    else:
        if "base" in doc:
            base = _stage_lists(_resolve_base(doc["base"], src), "base", src)
            if "choices" not in doc:
                raise GenotypeError("missing 'choices' (per-block choice indices) next to 'base'", "choices", src)
            arch = apply_choices(base, doc["choices"], src)
        else:
            arch = _stage_lists(doc["arch"], "arch", src)
        g = chain_from_arch_strings(arch, name=name, network=network, source=src)
    return replace(g, description=description)


def _network_from_dict(net_doc: Any, src: str) -> ChainNetwork:
    if not isinstance(net_doc, dict):
        raise GenotypeError(f"found {json_preview(net_doc)}, expected an object", "network", src)
    check_keys(net_doc, ChainNetwork.__dataclass_fields__, "network", src)
    for key, value in net_doc.items():
        if value is not None:
            low, high = _NETWORK_BOUNDS[key]
            bounded_int(value, low, high, f"network.{key}", src)
    # null means "not given": the default then applies, as it will when the saved document is read back.
    return ChainNetwork(**{k: v for k, v in net_doc.items() if v is not None})


def _resolve_base(base: Any, src: str) -> Any:
    if not isinstance(base, str):
        return base
    if base not in BASE_NAMES:
        raise GenotypeError(
            f"found base {repr_preview(base)}, expected 'cdarts_a_base', 'cdarts_b_base' or a list of stages",
            "base",
            src,
        )
    return base_arch(base)


def _stage_lists(value: Any, key: str, src: str) -> list[list]:
    """A list of stages, each a list, within the stage and block limits."""
    if not isinstance(value, list) or not all(isinstance(s, list) for s in value):
        raise GenotypeError(f"found {json_preview(value)}, expected a list of stages of arch strings", key, src)
    check_count(value, limits.MAX_STAGES, "stages", key, src)
    for i, stage in enumerate(value):
        check_count(stage, limits.MAX_BLOCKS_PER_STAGE, "blocks", f"{key}[{i}]", src)
    return value


def _stages_from_dict(stages_doc: Any, src: str) -> tuple[tuple[Block, ...], ...]:
    if not isinstance(stages_doc, list) or not stages_doc:
        raise GenotypeError(f"found {json_preview(stages_doc)}, expected a non-empty list of stages", "stages", src)
    check_count(stages_doc, limits.MAX_STAGES, "stages", "stages", src)
    stages = []
    for i, stage in enumerate(stages_doc):
        loc = f"stages[{i}]"
        if not isinstance(stage, list) or not stage:
            raise GenotypeError(f"found {json_preview(stage)}, expected a non-empty list of blocks", loc, src)
        check_count(stage, limits.MAX_BLOCKS_PER_STAGE, "blocks", loc, src)
        stages.append(tuple(block_from_dict(b, f"{loc}[{j}]", src) for j, b in enumerate(stage)))
    return tuple(stages)


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
        expansion=_intify(doc.get("expansion", 1)),
        stride=doc["stride"],
        out_channels=doc["out_channels"],
        se_ratio=_intify(doc.get("se_ratio", 0)),
        repeats=doc.get("repeats", 1),
    )
    validate_block(block, loc, src)
    return block
