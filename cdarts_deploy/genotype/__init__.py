"""The genotype format: pure data, no torch.

A genotype is a versioned JSON document of one of three kinds:

* ``cell`` -- DARTS cell space: one or more stages, each with a normal and a
  reduction cell given per intermediate node as ``[operation, input_index]``
  pairs, plus the concatenated node indices.
* ``chain`` -- the chain-structured MBConv space: stages of blocks that map
  one-to-one onto timm arch strings (``ir_r1_k5_s2_e6_c24_se0.25``).
* ``nb201`` -- the NAS-Bench-201 space: one cell of 6 edges in the benchmark's own text
  (``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|``).

Legacy files of the reference code (``{"0": "Genotype(...)", ...}``), bare
``Genotype(...)`` strings and the original DARTS flat form are parsed with
:mod:`ast` as data, never evaluated.  Every input is bounded
(:mod:`~cdarts_deploy.genotype.limits`), and every rejection raises one
:class:`GenotypeError` naming the source, the location, what was found and
what was expected.

Modules, from the bottom up:

* ``errors`` -- :class:`GenotypeError` and bounded previews of bad values;
* ``limits`` -- the bounds on every input and the checks on raw text;
* ``fields`` -- checks on one JSON field (known keys, bounded numbers, strings);
* ``blocks`` -- one chain block: :class:`Block`, its arch string both ways, its checks;
* ``model`` -- the frozen dataclasses (:class:`CellGenotype`, :class:`ChainGenotype`, ...);
* ``cell`` -- the cell kind: operations, layouts, cell validation;
* ``bases`` -- the chain space's base networks: by name, the tiny test base, a ``--base`` option;
* ``chain`` -- the chain kind: the choice form and chain documents;
* ``nb201`` -- the NAS-Bench-201 kind: the benchmark string both ways, nb201 documents;
* ``legacy`` -- the reference code's ``Genotype(...)`` forms, read with :mod:`ast`;
* ``document`` -- the document header and :func:`from_dict` / :func:`to_dict`;
* ``zoo`` -- the built-in genotypes;
* ``files`` -- :func:`loads`, :func:`load`, :func:`dumps`, :func:`save`.
"""

from cdarts_deploy.genotype import limits
from cdarts_deploy.genotype.bases import TINY_BASE, base_arch, base_from_option, resolve_base
from cdarts_deploy.genotype.blocks import BLOCK_TYPES, Block, parse_arch_string
from cdarts_deploy.genotype.cell import CELL_OPS, LAYOUT_DEFAULTS, LAYOUTS, SEARCH_OPS
from cdarts_deploy.genotype.chain import CHAIN_CHOICES, CHAIN_DEFAULTS, apply_choices, is_searchable_block
from cdarts_deploy.genotype.document import FORMAT, VERSION, from_dict, to_dict
from cdarts_deploy.genotype.errors import GenotypeError
from cdarts_deploy.genotype.files import dumps, load, loads, save
from cdarts_deploy.genotype.model import (
    Cell,
    CellGenotype,
    CellNetwork,
    CellStage,
    ChainGenotype,
    ChainNetwork,
    Edge,
    Genotype,
    Nb201Genotype,
    Nb201Network,
)
from cdarts_deploy.genotype.nb201 import (
    NB201_ARCHS,
    NB201_DEFAULTS,
    NB201_OPS,
    nb201_from_string,
    parse_nb201_string,
)
from cdarts_deploy.genotype.zoo import zoo_names

__all__ = [
    "BLOCK_TYPES",
    "CELL_OPS",
    "CHAIN_CHOICES",
    "CHAIN_DEFAULTS",
    "FORMAT",
    "LAYOUTS",
    "LAYOUT_DEFAULTS",
    "NB201_ARCHS",
    "NB201_DEFAULTS",
    "NB201_OPS",
    "SEARCH_OPS",
    "TINY_BASE",
    "VERSION",
    "Block",
    "Cell",
    "CellGenotype",
    "CellNetwork",
    "CellStage",
    "ChainGenotype",
    "ChainNetwork",
    "Edge",
    "Genotype",
    "GenotypeError",
    "Nb201Genotype",
    "Nb201Network",
    "apply_choices",
    "base_arch",
    "base_from_option",
    "dumps",
    "from_dict",
    "is_searchable_block",
    "limits",
    "load",
    "loads",
    "nb201_from_string",
    "parse_nb201_string",
    "parse_arch_string",
    "resolve_base",
    "save",
    "to_dict",
    "zoo_names",
]
