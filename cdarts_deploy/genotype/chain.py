"""The chain kind (MBConv space): the choice form and chain documents (one block:
:mod:`~cdarts_deploy.genotype.blocks`).

A chain document gives its stages in one of three forms:

* ``stages`` -- block objects (or arch strings), the canonical form;
* ``arch`` -- timm arch strings (``ir_r1_k5_s2_e6_c24_se0.25``), one list per stage;
* ``base`` + ``choices`` -- a base network and one (kernel, expansion) choice index per block,
  the form the chain search writes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cdarts_deploy.genotype import limits
from cdarts_deploy.genotype.bases import BASE_NAMES, base_arch
from cdarts_deploy.genotype.blocks import Block, block_from_dict, parse_arch_string, validate_stages
from cdarts_deploy.genotype.errors import GenotypeError, json_preview, repr_preview
from cdarts_deploy.genotype.fields import check_count, check_keys, network_hints, optional_text
from cdarts_deploy.genotype.model import ChainGenotype, ChainNetwork

#: (kernel, expansion) candidates of the chain space, indexed by choice.
CHAIN_CHOICES: tuple[tuple[int, int], ...] = ((3, 4), (3, 6), (5, 4), (5, 6), (7, 4), (7, 6))

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
    network = network_hints(doc.get("network", {}), ChainNetwork, _NETWORK_BOUNDS, src)
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
        validate_stages(g.stages, src)
    else:
        if "base" in doc:
            base = _stage_lists(_resolve_base(doc["base"], src), "base", src)
            if "choices" not in doc:
                raise GenotypeError("missing 'choices' (per-block choice indices) next to 'base'", "choices", src)
            arch = apply_choices(base, doc["choices"], src)
        else:
            arch = _stage_lists(doc["arch"], "arch", src)
        g = ChainGenotype.from_arch_strings(arch, name=name, network=network, source=src)
    return replace(g, description=description)


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


