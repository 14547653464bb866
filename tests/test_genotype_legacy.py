"""Legacy genotypes of the reference code: read with ast as data, never evaluated."""

from __future__ import annotations

import json

import pytest

from cdarts_deploy import genotype as gt
from cdarts_deploy.genotype import legacy
from genotype_samples import DARTS_V2_FLAT, DARTS_V2_LEGACY, cells_equal

__all__ = ["DARTS_V2_LEGACY", "DARTS_V2_FLAT"]  # also imported by other test modules


def test_legacy_reference_file_three_stages(tmp_path):
    path = tmp_path / "best_genotype.json"
    path.write_text(json.dumps({"0": DARTS_V2_LEGACY, "1": DARTS_V2_LEGACY, "2": DARTS_V2_LEGACY}))
    g = gt.load(path)
    assert len(g.stages) == 3
    assert all(st == gt.load("darts_v2").stages[0] for st in g.stages)
    assert g.name == "best_genotype"


def test_legacy_bare_string_flat_form_and_list_concat(tmp_path):
    bare = tmp_path / "bare.txt"
    bare.write_text(DARTS_V2_LEGACY + "\n")
    flat = tmp_path / "flat.txt"
    flat.write_text(DARTS_V2_FLAT)
    assert cells_equal(gt.load(bare), gt.load("darts_v2"))
    assert cells_equal(gt.load(flat), gt.load("darts_v2"))


def test_legacy_positional_and_module_qualified():
    text = DARTS_V2_LEGACY.replace("normal=", "").replace("normal_concat=", "").replace("reduce=", "").replace(
        "reduce_concat=", "").replace("Genotype(", "genotypes.Genotype(")
    assert cells_equal(gt.loads(text), gt.load("darts_v2"))


def test_legacy_json_string_value():
    assert cells_equal(gt.loads(json.dumps(DARTS_V2_LEGACY)), gt.load("darts_v2"))


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("__import__('os').system('echo pwned')", "not Genotype"),
        (DARTS_V2_LEGACY.replace("range(2, 6)", "list(range(2, 6))", 1), "non-literal"),
        (DARTS_V2_LEGACY.replace("'sep_conv_3x3', 0", "'sep_conv_3x3', __import__('os')", 1), "non-literal"),
        (DARTS_V2_LEGACY.replace("'sep_conv_3x3', 0", "'none', 0", 1), "only during search"),
        (DARTS_V2_LEGACY.replace("reduce_concat=range(2, 6)", "bogus=1"), "field 'bogus'"),
        (DARTS_V2_LEGACY[:-5], "not a Genotype"),
    ],
)
def test_legacy_rejections_never_evaluate(text, fragment):
    with pytest.raises(gt.GenotypeError, match=fragment):
        gt.loads(text)


@pytest.mark.parametrize(
    "old, new, fragment",
    [
        ("range(2, 6)", "range(2, 6, 0)", "malformed range"),
        ("range(2, 6)", "range(2, 6, 1, 1)", "malformed range"),
        ("range(2, 6)", "range(0, 1000000000000000000000000000)", "malformed range"),
        ("range(2, 6)", "range(0, 40)", "range of 40 node indices"),
        ("range(2, 6)", "range(a, b)", "non-literal"),
        ("reduce_concat=range(2, 6)", "", "missing field(s) reduce_concat"),
    ],
)
def test_legacy_concat_rejections(old, new, fragment):
    with pytest.raises(gt.GenotypeError) as info:
        gt.loads(DARTS_V2_LEGACY.replace(old, new, 1).replace(", )", ")"))
    assert fragment in str(info.value)


def test_legacy_odd_flat_pairs():
    text = DARTS_V2_FLAT.replace("('dil_conv_3x3', 2)], normal_concat", "], normal_concat", 1).replace(", ]", "]")
    with pytest.raises(gt.GenotypeError, match="found 7 flat"):
        gt.loads(text)


def test_legacy_stage_keys_must_be_consecutive():
    with pytest.raises(gt.GenotypeError, match="consecutive keys"):
        gt.from_dict({"0": DARTS_V2_LEGACY, "2": DARTS_V2_LEGACY}, "best.json")
    with pytest.raises(gt.GenotypeError) as info:
        gt.from_dict({"0": DARTS_V2_LEGACY, "1": 7}, "best.json")
    assert info.value.location == "1"


def test_legacy_error_names_stage_and_field():
    bad = DARTS_V2_LEGACY.replace("'sep_conv_3x3', 0", "'conv_9x9', 0", 1)
    with pytest.raises(gt.GenotypeError) as info:
        gt.from_dict({"0": DARTS_V2_LEGACY, "1": bad}, "best.json")
    assert info.value.location == "['1'].normal[0][0][0]"
    assert str(info.value).startswith("best.json: ['1'].normal[0][0][0]: found operation 'conv_9x9'")


def test_legacy_stage_object_detection():
    assert legacy.is_legacy_stages({"0": "x", "1": "y"})
    assert not legacy.is_legacy_stages({})
    assert not legacy.is_legacy_stages({"0": "x", "name": "y"})
    assert not legacy.is_legacy_stages({"1" * 50: "x"})  # not a stage number: no int() of a huge key
