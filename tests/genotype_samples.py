"""Sample genotype texts and document helpers shared by the genotype tests (and the export tests)."""

from __future__ import annotations

from cdarts_deploy import genotype as gt

DARTS_V2_LEGACY = (
    "Genotype(normal=[[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], "
    "[('sep_conv_3x3', 1), ('skip_connect', 0)], [('skip_connect', 0), ('dil_conv_3x3', 2)]], "
    "normal_concat=range(2, 6), "
    "reduce=[[('max_pool_3x3', 0), ('max_pool_3x3', 1)], [('skip_connect', 2), ('max_pool_3x3', 1)], "
    "[('max_pool_3x3', 0), ('skip_connect', 2)], [('skip_connect', 2), ('max_pool_3x3', 1)]], "
    "reduce_concat=range(2, 6))"
)
# The original DARTS repository writes 8 flat pairs per cell and list concats.
DARTS_V2_FLAT = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), "
    "('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)


def cells_equal(a: gt.CellGenotype, b: gt.CellGenotype) -> bool:
    return a.stages == b.stages


def valid_cell_doc() -> dict:
    return gt.to_dict(gt.load("darts_v2"))


def valid_chain_doc() -> dict:
    return gt.to_dict(gt.load("cdarts_b"))


def set_at(doc: dict, keys: list, value) -> dict:
    """Set ``doc[k0][k1]...[kn] = value`` and return ``doc``."""
    target = doc
    for k in keys[:-1]:
        target = target[k]
    target[keys[-1]] = value
    return doc


def refusal_of_file(doc, tmp_path):
    """Write ``doc`` as ``bad.json``, load it, and return the GenotypeError with the file's path."""
    import json

    import pytest

    from cdarts_deploy import genotype as gt

    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(gt.GenotypeError) as info:
        gt.load(path)
    return info.value, path
