"""The chain kind: arch strings, the base + choices form, block validation, the searchable-block rule."""

from __future__ import annotations

import copy
import json

import pytest

from cdarts_deploy import genotype as gt
from genotype_samples import valid_chain_doc


def test_chain_zoo_choice_form_matches_notes():
    b = gt.load("cdarts_b")
    arch = b.arch_strings()
    assert [len(s) for s in arch] == [1, 4, 4, 4, 4, 4, 1]
    # stage 1 choices [3, 4, 2, 0] -> (5,6), (7,4), (5,4), (3,4); only the first block strides
    assert arch[1] == [
        "ir_r1_k5_s2_e6_c24_se0.25", "ir_r1_k7_s1_e4_c24_se0.25",
        "ir_r1_k5_s1_e4_c24_se0.25", "ir_r1_k3_s1_e4_c24_se0.25",
    ]
    # stage 3 last choice (2 -> k5 e4) covers the r2 string: 5 blocks in all
    assert arch[3][-1] == "ir_r2_k5_s1_e4_c80_se0.25"
    assert sum(blk.repeats for blk in b.stages[3]) == 5
    a = gt.load("cdarts_a")
    assert [len(s) for s in a.arch_strings()] == [1, 1, 2, 3, 4, 3, 1]
    assert a.arch_strings()[1] == ["ir_r1_k3_s2_e4_c24_se0.25"]  # single-block stage keeps its base block


def test_choice_form_document_loads_equal_to_zoo(tmp_path):
    doc = {
        "format": "cdarts-genotype", "version": 1, "kind": "chain", "name": "cdarts_b",
        "description": "CDARTS-b, chain-structured MBConv space (ImageNet)",
        "base": "cdarts_b_base",
        "choices": [[0], [3, 4, 2, 0], [5, 2, 4, 0], [4, 3, 2, 2], [1, 3, 0, 1], [2, 4, 4, 2], [0]],
        "network": {"num_classes": 1000, "input_size": 224},
    }
    path = tmp_path / "choice.json"
    path.write_text(json.dumps(doc))
    assert gt.load(path) == gt.load("cdarts_b")


def test_arch_form_document_without_header():
    g = gt.load("cdarts_a")
    doc = {"arch": g.arch_strings(), "name": "cdarts_a", "network": {"num_classes": 1000, "input_size": 224}}
    assert gt.from_dict(doc).stages == g.stages


def test_arch_string_round_trip():
    g = gt.load("cdarts_a")
    again = gt.ChainGenotype.from_arch_strings(g.arch_strings(), name=g.name, network=g.network)
    assert again.stages == g.stages
    assert gt.parse_arch_string("ir_r2_k5_s2_e6_c40_se0.25").to_arch_string() == "ir_r2_k5_s2_e6_c40_se0.25"
    assert gt.parse_arch_string("cn_r1_k1_s1_c960") == gt.Block("cn", 1, 1, 1, 960, 0, 1)


@pytest.mark.parametrize(
    "text, fragment",
    [
        (42, "found int 42, expected an arch string"),
        ("mb_r1_k3_s1_c16", "block type 'mb'"),
        ("ir_r1_k3_x2_c24", "token 'x2'"),
        ("ir_r1_k3_c24", "lacks its 's' token"),
        ("ir_r1_k3.5_s1_e4_c24", "k3.5"),
        ("ir_r1_k9_s1_e4_c24", "found kernel 9"),
        ("ir_r1_k3_s1_e4_c0", "found out_channels 0"),
    ],
)
def test_arch_string_rejections(text, fragment):
    with pytest.raises(gt.GenotypeError, match=fragment.replace(".", r"\.")):
        gt.parse_arch_string(text, "arch[0][0]", "mine.json")


@pytest.mark.parametrize(
    "mutate, location, fragment",
    [
        (lambda d: d["stages"][1][0].update(kernel=4), "stages[1][0].kernel", "found kernel 4"),
        (lambda d: d["stages"][1][0].update(stride=3), "stages[1][0].stride", "found stride 3"),
        (lambda d: d["stages"][1][0].update(type="mb"), "stages[1][0].type", "found type 'mb'"),
        (lambda d: d["stages"][1][0].update(expansion="6"), "stages[1][0].expansion", "expected a number"),
        (lambda d: d["stages"][1][0].update(se_ratio=1.5), "stages[1][0].se_ratio", "se_ratio"),
        (lambda d: d["stages"][1][0].pop("out_channels"), "stages[1][0].out_channels", "missing"),
        (lambda d: d["stages"].__setitem__(2, []), "stages[2]", "non-empty list of blocks"),
        (lambda d: d["stages"][1].__setitem__(1, "ir_r1_k3_x2_c24"), "stages[1][1]", "token 'x2'"),
    ],
)
def test_chain_validation_names_location(mutate, location, fragment):
    doc = copy.deepcopy(gt.to_dict(gt.load("cdarts_b")))
    mutate(doc)
    with pytest.raises(gt.GenotypeError) as info:
        gt.from_dict(doc, "mine.json")
    assert info.value.location == location
    assert fragment in str(info.value)
    assert str(info.value).startswith("mine.json: ")


@pytest.mark.parametrize(
    "choices, location",
    [
        ([[0], [3, 4, 2], [5, 2, 4, 0], [4, 3, 2, 2], [1, 3, 0, 1], [2, 4, 4, 2], [0]], "choices[1]"),
        ([[0], [3, 4, 2, 6], [5, 2, 4, 0], [4, 3, 2, 2], [1, 3, 0, 1], [2, 4, 4, 2], [0]], "choices[1][3]"),
        ([[0], [3, 4, 2, 0]], "choices"),
        ([[0], [3, 4, 2, True], [5, 2, 4, 0], [4, 3, 2, 2], [1, 3, 0, 1], [2, 4, 4, 2], [0]], "choices[1][3]"),
    ],
)
def test_choice_form_rejections(choices, location):
    doc = {"format": "cdarts-genotype", "version": 1, "kind": "chain", "base": "cdarts_b_base", "choices": choices}
    with pytest.raises(gt.GenotypeError) as info:
        gt.from_dict(doc)
    assert info.value.location == location


_HEADER = {"format": "cdarts-genotype", "version": 1, "kind": "chain"}
_STEM = [["ds_r1_k3_s1_e1_c16"]]


@pytest.mark.parametrize(
    "body, location, fragment",
    [
        ({"base": "cdarts_c_base", "choices": []}, "base", "found base 'cdarts_c_base'"),
        ({"base": "cdarts_b_base", "arch": _STEM}, "stages", "expected exactly one"),
        ({"base": "cdarts_b_base"}, "choices", "missing 'choices'"),
        ({"arch": _STEM, "choices": [[0]]}, "choices", "'choices' without 'base'"),
        ({"arch": "ir_r1_k3_s1_e4_c24"}, "arch", "list of stages of arch strings"),
        ({"arch": _STEM, "network": {"num_classes": True}}, "network.num_classes", "found True"),
        ({"arch": _STEM, "network": {"head_channels": 0}}, "network.head_channels", "positive integer"),
    ],
)
def test_chain_document_form_rejections(body, location, fragment):
    with pytest.raises(gt.GenotypeError) as info:
        gt.from_dict({**_HEADER, **body})
    assert info.value.location == location
    assert fragment in str(info.value)


def test_block_may_be_an_arch_string_in_stages():
    doc = valid_chain_doc()
    doc["stages"][1][0] = "ir_r1_k5_s2_e6_c24_se0.25"
    assert gt.from_dict(doc) == gt.load("cdarts_b")


def test_null_network_channels_mean_default():
    doc = valid_chain_doc()
    doc["network"]["stem_channels"] = None
    g = gt.from_dict(doc)
    assert g.network.stem_channels == 16
    assert gt.dumps(gt.loads(gt.dumps(g))) == gt.dumps(g)


def test_base_arch_names():
    assert [len(s) for s in gt.base_arch("cdarts_b_base")] == [1, 4, 4, 4, 4, 4, 1]
    assert [len(s) for s in gt.base_arch("cdarts_a_base")] == [1, 1, 2, 3, 4, 3, 1]
    with pytest.raises(gt.GenotypeError, match="found base 'other'"):
        gt.base_arch("other")


def test_searchable_block_rule():
    # inner stages with more than one ir block are searched; the first and last stages and single-block stages not
    assert gt.is_searchable_block(1, 7, 4, "ir")
    assert not gt.is_searchable_block(0, 7, 1, "ds")
    assert not gt.is_searchable_block(6, 7, 4, "ir")
    assert not gt.is_searchable_block(1, 7, 1, "ir")
    assert not gt.is_searchable_block(2, 7, 4, "cn")


def test_chain_choices_and_defaults():
    assert gt.CHAIN_CHOICES == ((3, 4), (3, 6), (5, 4), (5, 6), (7, 4), (7, 6))
    assert gt.CHAIN_DEFAULTS == {"num_classes": 1000, "input_size": 224}
    assert gt.BLOCK_TYPES == ("ds", "ir", "cn")
