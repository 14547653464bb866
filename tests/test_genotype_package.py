"""The package's public names, its error class, and its imports (standard library only)."""

from __future__ import annotations

import subprocess
import sys

import cdarts_deploy.genotype as gt
from cdarts_deploy.errors import UserError

# Every name the rest of the project (backbones, search, deploy, downstream, tools, tests) imports from here.
USED_NAMES = [
    "BLOCK_TYPES", "CELL_OPS", "CHAIN_CHOICES", "CHAIN_DEFAULTS", "FORMAT", "LAYOUTS", "LAYOUT_DEFAULTS",
    "SEARCH_OPS", "VERSION", "Block", "Cell", "CellGenotype", "CellNetwork", "CellStage", "ChainGenotype",
    "ChainNetwork", "Edge", "Genotype", "GenotypeError", "apply_choices", "base_arch", "dumps", "from_dict",
    "is_searchable_block", "load", "loads", "parse_arch_string", "save", "to_dict", "zoo_names",
]


def test_public_names_are_exported():
    missing = [name for name in USED_NAMES if not hasattr(gt, name)]
    assert missing == []
    assert set(USED_NAMES) <= set(gt.__all__)
    assert all(hasattr(gt, name) for name in gt.__all__)


def test_genotype_error_is_a_user_error_and_a_value_error():
    assert issubclass(gt.GenotypeError, UserError)
    assert issubclass(gt.GenotypeError, ValueError)
    assert gt.GenotypeError("x").exit_code == 2


def test_genotype_module_does_not_import_torch():
    code = (
        "import sys; import cdarts_deploy.genotype as g; g.load('cdarts_b'); g.load('darts_v2'); "
        "print([m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
