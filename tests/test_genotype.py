"""The genotype format: validation, legacy parsing, canonical round trip, zoo."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

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


def _cells_equal(a: gt.CellGenotype, b: gt.CellGenotype) -> bool:
    return a.stages == b.stages


def _valid_cell_doc() -> dict:
    return gt.to_dict(gt.load("darts_v2"))


# --- zoo -----------------------------------------------------------------------------------------


def test_zoo_lists_every_builtin():
    assert set(gt.zoo_names()) == {
        "darts_v1", "darts_v2", "pdarts", "pcdarts_cifar", "pcdarts_imagenet",
        "cdarts_cifar", "cdarts_imagenet", "cdarts_a", "cdarts_b",
    }


@pytest.mark.parametrize("name", gt.zoo_names())
def test_zoo_entries_load_and_round_trip(name, tmp_path):
    g = gt.load(name)
    assert g.name == name
    path = tmp_path / "g.json"
    gt.save(g, path)
    first = path.read_bytes()
    again = gt.load(path)
    assert again == g
    gt.save(again, path)
    assert path.read_bytes() == first


def test_zoo_matches_reference_table():
    # cdarts_imagenet, node 5 of the reduction cell: sep_conv_3x3<-3, dil_conv_3x3<-4 (zoo-genotypes.md)
    g = gt.load("cdarts_imagenet")
    assert g.stages[0].reduce.nodes[3] == (("sep_conv_3x3", 3), ("dil_conv_3x3", 4))
    assert g.network.layout == "imagenet" and g.network.width == 48 and g.network.cells == 14
    c = gt.load("cdarts_cifar")
    assert c.network.layout == "cifar" and c.network.width == 36 and c.network.cells == 20


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


def test_arch_string_round_trip():
    g = gt.load("cdarts_a")
    again = gt.ChainGenotype.from_arch_strings(g.arch_strings(), name=g.name, network=g.network)
    assert again.stages == g.stages
    assert gt.parse_arch_string("ir_r2_k5_s2_e6_c40_se0.25").to_arch_string() == "ir_r2_k5_s2_e6_c40_se0.25"
    assert gt.parse_arch_string("cn_r1_k1_s1_c960") == gt.Block("cn", 1, 1, 1, 960, 0, 1)


# --- legacy --------------------------------------------------------------------------------------


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
    assert _cells_equal(gt.load(bare), gt.load("darts_v2"))
    assert _cells_equal(gt.load(flat), gt.load("darts_v2"))


def test_legacy_positional_and_module_qualified():
    text = DARTS_V2_LEGACY.replace("normal=", "").replace("normal_concat=", "").replace("reduce=", "").replace(
        "reduce_concat=", "").replace("Genotype(", "genotypes.Genotype(")
    assert _cells_equal(gt.loads(text), gt.load("darts_v2"))


def test_legacy_json_string_value():
    assert _cells_equal(gt.loads(json.dumps(DARTS_V2_LEGACY)), gt.load("darts_v2"))


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


# --- validation ----------------------------------------------------------------------------------


def _mutate(path_fn, value):
    doc = _valid_cell_doc()
    path_fn(doc, value)
    return doc


def _set(keys):
    def setter(doc, value):
        target = doc
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
    return setter


@pytest.mark.parametrize(
    "keys, value, location, fragment",
    [
        (["stages", 0, "reduce", 2, 0], ["conv_7x7", 0], "stages[0].reduce[2][0][0]", "found operation 'conv_7x7'"),
        (["stages", 0, "normal", 0, 1], ["sep_conv_3x3", 2], "stages[0].normal[0][1][1]", "expected 0..1"),
        (["stages", 0, "normal", 3, 0], ["sep_conv_3x3", 5], "stages[0].normal[3][0][1]", "expected 0..4"),
        (["stages", 0, "normal", 1, 0], ["sep_conv_3x3", -1], "stages[0].normal[1][0][1]", "found input -1"),
        (["stages", 0, "normal", 1, 0], ["none", 0], "stages[0].normal[1][0][0]", "only during search"),
        (["stages", 0, "normal", 1], [["sep_conv_3x3", 0], ["skip_connect", 0]], "stages[0].normal[1]", "two edges"),
        (["stages", 0, "normal", 1], [["sep_conv_3x3", 0]], "stages[0].normal[1]", "expected 2 edges"),
        (["stages", 0, "normal", 1, 1], ["sep_conv_3x3", "1"], "stages[0].normal[1][1][1]", "found '1'"),
        (["stages", 0, "normal", 1, 1], ["sep_conv_3x3", True], "stages[0].normal[1][1][1]", "found True"),
        (["stages", 0, "normal", 1, 1], "sep_conv_3x3", "stages[0].normal[1][1]", "expected a pair"),
        (["stages", 0, "normal_concat"], [2, 3, 4, 6], "stages[0].normal_concat[3]", "expected 0..5"),
        (["stages", 0, "normal_concat"], [2, 3, 3, 5], "stages[0].normal_concat[2]", "twice"),
        (["stages", 0, "reduce_concat"], [], "stages[0].reduce_concat", "non-empty"),
        (["stages", 0, "normal"], [], "stages[0].normal", "non-empty list of nodes"),
        (["stages"], [], "stages", "non-empty list of stages"),
        (["version"], 2, "version", "expected 1"),
        (["format"], "darts", "format", "expected 'cdarts-genotype'"),
        (["kind"], "graph", "kind", "expected 'cell' or 'chain'"),
        (["network", "layout"], "mobile", "network.layout", "expected 'cifar' or 'imagenet'"),
        (["network", "width"], 0, "network.width", "positive integer"),
        (["network", "depth"], 3, "network", "unknown key 'depth'"),
        (["extra"], 1, "extra", "unknown key 'extra'"),
    ],
)
def test_cell_validation_names_location(keys, value, location, fragment, tmp_path):
    doc = _mutate(_set(keys), value)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(gt.GenotypeError) as info:
        gt.load(path)
    err = info.value
    assert err.location == location
    assert fragment in str(err)
    assert str(path) in str(err)


def test_missing_stage_key():
    doc = _valid_cell_doc()
    del doc["stages"][0]["reduce_concat"]
    with pytest.raises(gt.GenotypeError, match=r"stages\[0\]\.reduce_concat: missing"):
        gt.from_dict(doc)


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
    ],
)
def test_choice_form_rejections(choices, location):
    doc = {"format": "cdarts-genotype", "version": 1, "kind": "chain", "base": "cdarts_b_base", "choices": choices}
    with pytest.raises(gt.GenotypeError) as info:
        gt.from_dict(doc)
    assert info.value.location == location


def test_unknown_zoo_name_and_missing_file(tmp_path):
    with pytest.raises(gt.GenotypeError, match="no file or zoo genotype named 'cdarts_c'"):
        gt.load("cdarts_c")
    with pytest.raises(gt.GenotypeError, match="file not found"):
        gt.load(tmp_path / "missing.json")


def test_invalid_json_reports_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"format": "cdarts-genotype",\n "version": 1,,}')
    with pytest.raises(gt.GenotypeError, match=r"line 2 column"):
        gt.load(path)


def test_per_stage_cells_and_stage_lookup():
    base = gt.load("darts_v2").stages[0]
    other = gt.load("cdarts_cifar").stages[0]
    g = gt.CellGenotype(stages=(base, other, base))
    assert g.stage(1) == other and g.stage(2) == base
    shared = gt.CellGenotype(stages=(other,))
    assert shared.stage(2) == other
    with pytest.raises(gt.GenotypeError, match="2 stages"):
        gt.CellGenotype(stages=(base, other)).stage(0)


def test_equality_and_readable_str():
    a, b = gt.load("darts_v2"), gt.load("darts_v2")
    assert a == b and a != gt.load("darts_v1")
    text = str(a)
    assert "sep_conv_3x3(0)" in text and "concat=[2, 3, 4, 5]" in text
    assert "ir_r1_k5_s2_e6_c24_se0.25" in str(gt.load("cdarts_b"))


def test_genotype_module_does_not_import_torch():
    code = "import sys; import cdarts_deploy.genotype as g; g.load('cdarts_b'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
