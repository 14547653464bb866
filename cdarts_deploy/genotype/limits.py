"""Bounds on every genotype input, and the checks that apply them to raw text.

Any text given as a genotype ends in a valid genotype or in one :class:`GenotypeError`, quickly
and in bounded memory.  Real genotypes are small (a DARTS cell has 4 nodes, a CDARTS chain 7
stages of at most 5 blocks, a file a few KiB); each bound below admits them with a wide margin
and refuses inputs that would exhaust the parser or make building the network hang.

=====================================  ==================  ==================================
input                                  bound               real genotypes
=====================================  ==================  ==================================
file or text size                      1 MiB               < 4 KiB
JSON nesting depth                     32                  6
stages (cell or chain)                 16                  1 or 3 (cell), 7 (chain)
nodes per cell                         32                  4
blocks per chain stage                 64                  <= 5
repeats of one block                   16                  1 or 2
blocks of a chain (repeats counted)    256                 15 or 23
channels (block, stem, head)           1 .. 8192           16 .. 1280
kernel                                 1, 3, 5 or 7        1 .. 7
stride                                 1 or 2              1 or 2
expansion                              1 .. 16             1 .. 6
se_ratio                               0 <= r < 1          0 or 0.25
classes                                1 .. 100000         10 .. 1000
input size                             8 .. 4096           32 .. 224
width hint (cell network)              1 .. 1024           36 or 48
cells hint (cell network)              1 .. 64             14 or 20
name, arch string                      255 characters      < 40
description                            2000 characters     < 80
legacy ``Genotype(...)`` text          64 KiB              < 1 KiB
legacy syntax tree: nodes, depth       20000, 32           ~ 100, 7
=====================================  ==================  ==================================

Numbers must be finite (JSON's ``NaN`` and ``Infinity`` are refused), an object may not repeat a
key, and ``true``/``false`` are not integers.
"""

from __future__ import annotations

import ast

from cdarts_deploy.genotype.errors import GenotypeError

MAX_FILE_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
MAX_STAGES = 16
MAX_NODES_PER_CELL = 32
MAX_BLOCKS_PER_STAGE = 64
MAX_REPEATS = 16
MAX_CHAIN_BLOCKS = 256
MAX_CHANNELS = 8192
MAX_EXPANSION = 16
MAX_CLASSES = 100_000
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 8, 4096
MAX_WIDTH = 1024
MAX_CELLS = 64
MAX_NAME_CHARS = 255  # a file name's length: a genotype saved without a name takes its file's stem
MAX_ARCH_STRING_CHARS = 255
MAX_DESCRIPTION_CHARS = 2000
MAX_LEGACY_CHARS = 64 * 1024
MAX_LEGACY_AST_NODES = 20_000
MAX_LEGACY_AST_DEPTH = 32

def check_text_size(text: str, source: str) -> None:
    """Refuse text longer than :data:`MAX_FILE_BYTES` (characters of a string, bytes of a file)."""
    if len(text) > MAX_FILE_BYTES:
        raise GenotypeError(
            f"found {len(text)} characters, expected a genotype of at most {MAX_FILE_BYTES} bytes", "", source
        )


def check_legacy_text(text: str, location: str, source: str) -> None:
    """Refuse a legacy ``Genotype(...)`` text too long to hand to :func:`ast.parse`."""
    if len(text) > MAX_LEGACY_CHARS:
        raise GenotypeError(
            f"found a Genotype(...) text of {len(text)} characters, expected at most {MAX_LEGACY_CHARS}",
            location,
            source,
        )


def check_legacy_tree(tree: ast.AST, location: str, source: str) -> None:
    """Refuse a syntax tree too large or too deep for :func:`ast.literal_eval` (which recurses)."""
    count = 0
    pending = [(tree, 1)]
    while pending:
        node, depth = pending.pop()
        count += 1
        if count > MAX_LEGACY_AST_NODES:
            raise GenotypeError(
                f"found a Genotype(...) expression of more than {MAX_LEGACY_AST_NODES} syntax nodes, "
                f"expected at most {MAX_LEGACY_AST_NODES}",
                location,
                source,
            )
        if depth > MAX_LEGACY_AST_DEPTH:
            raise GenotypeError(
                f"found a Genotype(...) expression nested more than {MAX_LEGACY_AST_DEPTH} levels deep, "
                f"expected at most {MAX_LEGACY_AST_DEPTH}",
                location,
                source,
            )
        pending.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
