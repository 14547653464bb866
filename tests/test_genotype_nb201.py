"""The nb201 genotype kind: every benchmark string parses and round-trips; every mistake is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdarts_deploy import genotype as gt
from cdarts_deploy.nats_bench import open_benchmark

SUBSET = Path(__file__).parent / "data" / "nats_bench_tss_subset"
EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def test_every_benchmark_string_parses_and_round_trips():
    archs = open_benchmark(SUBSET).archs
    assert len(archs) == gt.NB201_ARCHS == 15625 and len(set(archs)) == 15625
    for index, arch in enumerate(archs):
        g = gt.nb201_from_string(arch, index=index)
        assert g.arch_string() == arch
        assert gt.loads(gt.dumps(g)) == g
    assert archs[1] == EXAMPLE


def test_document_form_and_bare_string():
    g = gt.loads(EXAMPLE)
    assert g.kind == "nb201" and g.nodes[2] == ("skip_connect", "nor_conv_3x3", "skip_connect")
    doc = gt.to_dict(gt.Nb201Genotype(nodes=g.nodes, name="x", index=1, network=gt.Nb201Network(num_classes=100)))
    assert doc == {"format": "cdarts-genotype", "version": 1, "kind": "nb201", "name": "x", "arch": EXAMPLE,
                   "index": 1, "network": {"num_classes": 100}}
    assert gt.to_dict(gt.from_dict(doc)) == doc
    assert gt.load(EXAMPLE) == g  # a command argument may be the string itself


def test_save_load_is_byte_identical(tmp_path):
    g = gt.nb201_from_string(EXAMPLE, name="example", index=1)
    gt.save(g, tmp_path / "a.json")
    again = gt.load(tmp_path / "a.json")
    gt.save(again, tmp_path / "b.json")
    assert again == g and (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def _doc(**fields):
    return dict({"format": "cdarts-genotype", "version": 1, "kind": "nb201", "arch": EXAMPLE}, **fields)


@pytest.mark.parametrize("value, location, message", [
    (EXAMPLE.replace("+", "", 1), "arch", "found 2 node(s)"),
    (EXAMPLE.replace("avg_pool_3x3~1", "avg_pool_3x3~2"), "arch node 2 edge 1", "found input '2', expected 1"),
    (EXAMPLE.replace("avg_pool_3x3", "max_pool_3x3"), "arch node 2 edge 1", "found operation 'max_pool_3x3'"),
    (EXAMPLE.replace("|+|nor_conv_3x3~0|avg", "|+|nor_conv_3x3~0|none~1|avg"), "arch node 2",
     "found 3 edge(s), expected 2"),
    (EXAMPLE.replace("skip_connect~2", "skip_connect2"), "arch node 3 edge 2", "expected operation~2"),
    ("nor_conv_3x3~0", "arch", "found 1 node(s)"),
    (17, "arch", "expected a benchmark string"),
    ("|" * 300, "arch", "at most 255"),
])
def test_bad_strings_are_one_line(value, location, message):
    with pytest.raises(gt.GenotypeError) as info:
        gt.from_dict(_doc(arch=value), "g.json")
    err = info.value
    assert err.location == location and message in err.problem and "\n" not in str(err)


@pytest.mark.parametrize("fields, location, message", [
    (dict(index=15625), "index", "expected an integer 0..15624"),
    (dict(index=True), "index", "expected an integer"),
    (dict(network=dict(width=0)), "network.width", "expected a positive integer"),
    (dict(network=dict(layout="cifar")), "network", "unknown key 'layout'"),
    (dict(stages=[]), "stages", "unknown key 'stages'"),
])
def test_bad_fields_are_one_line(fields, location, message):
    with pytest.raises(gt.GenotypeError) as info:
        gt.from_dict(_doc(**fields), "g.json")
    assert info.value.location == location and message in info.value.problem


def test_missing_arch():
    doc = _doc()
    del doc["arch"]
    with pytest.raises(gt.GenotypeError, match="missing 'arch'"):
        gt.from_dict(doc)
