"""The document header (format, version, kind) and the conversions to and from genotypes."""

from __future__ import annotations

import json

import pytest

from cdarts_deploy import genotype as gt
from genotype_samples import DARTS_V2_LEGACY, refusal_of_file, set_at, valid_cell_doc, valid_chain_doc


@pytest.mark.parametrize(
    "keys, value, location, fragment",
    [
        (["version"], 2, "version", "expected 1"),
        (["version"], True, "version", "found version True"),
        (["format"], "darts", "format", "expected 'cdarts-genotype'"),
        (["kind"], "graph", "kind", "expected 'cell', 'chain' or 'nb201'"),
        (["extra"], 1, "extra", "unknown key 'extra'"),
    ],
)
def test_header_validation_names_location(keys, value, location, fragment, tmp_path):
    doc = set_at(valid_cell_doc(), keys, value)
    err, path = refusal_of_file(doc, tmp_path)
    assert err.location == location
    assert fragment in str(err)
    assert str(path) in str(err)


def test_missing_version():
    doc = valid_chain_doc()
    del doc["version"]
    with pytest.raises(gt.GenotypeError, match="found version None, expected 1"):
        gt.from_dict(doc)


@pytest.mark.parametrize("doc", [[], 3, None, 1.5])
def test_document_must_be_an_object(doc):
    with pytest.raises(gt.GenotypeError, match="expected an object"):
        gt.from_dict(doc, "x.json")


def test_object_without_header():
    with pytest.raises(gt.GenotypeError) as info:
        gt.from_dict({"stages": []}, "x.json")
    assert info.value.location == "format"
    assert "without 'format'" in str(info.value)


def test_dispatch_by_form():
    assert gt.from_dict(DARTS_V2_LEGACY).kind == "cell"
    assert gt.from_dict({"0": DARTS_V2_LEGACY}).kind == "cell"
    choices = [[0], [0], [0, 0], [0, 0, 0], [0] * 4, [0] * 3, [0]]
    assert gt.from_dict({"base": "cdarts_a_base", "choices": choices}).kind == "chain"
    assert gt.from_dict(valid_cell_doc()).kind == "cell"
    assert gt.from_dict(valid_chain_doc()).kind == "chain"


@pytest.mark.parametrize("name", ["darts_v2", "cdarts_imagenet", "cdarts_a", "cdarts_b"])
def test_to_dict_from_dict_round_trip(name):
    g = gt.load(name)
    doc = gt.to_dict(g)
    assert list(doc)[:3] == ["format", "version", "kind"]
    assert doc["format"] == gt.FORMAT and doc["version"] == gt.VERSION == 1
    assert gt.from_dict(doc) == g
    assert json.loads(json.dumps(doc)) == doc  # JSON-ready


def test_to_dict_leaves_out_empty_hints():
    g = gt.CellGenotype(stages=gt.load("darts_v2").stages)
    doc = gt.to_dict(g)
    assert "network" not in doc and "name" not in doc and "description" not in doc
