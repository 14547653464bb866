"""Genotype text and files: loads/load, canonical dumps/save, and one-line errors for unreadable files."""

from __future__ import annotations

import json

import pytest

from cdarts_deploy import genotype as gt
from genotype_samples import DARTS_V2_LEGACY, valid_cell_doc


def test_missing_file(tmp_path):
    with pytest.raises(gt.GenotypeError, match="file not found"):
        gt.load(tmp_path / "missing.json")


def test_folder_is_not_a_file(tmp_path):
    with pytest.raises(gt.GenotypeError, match="file not found"):
        gt.load(tmp_path)


def test_unusable_path_is_not_found():
    with pytest.raises(gt.GenotypeError, match="file not found"):
        gt.load("x" * 5000 + ".json")
    with pytest.raises(gt.GenotypeError, match="file not found"):
        gt.load("bad\0name.json")


def test_invalid_json_reports_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"format": "cdarts-genotype",\n "version": 1,,}')
    with pytest.raises(gt.GenotypeError, match=r"line 2 column"):
        gt.load(path)


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(gt.GenotypeError, match="expected a UTF-8 genotype JSON file"):
        gt.load(path)


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_document(text):
    with pytest.raises(gt.GenotypeError, match="found an empty document"):
        gt.loads(text, "empty.json")


def test_load_names_genotype_after_file(tmp_path):
    path = tmp_path / "my_cell.json"
    doc = valid_cell_doc()
    del doc["name"]
    path.write_text(json.dumps(doc))
    assert gt.load(path).name == "my_cell"
    doc["name"] = "given"
    path.write_text(json.dumps(doc))
    assert gt.load(path).name == "given"


def test_loads_keeps_missing_name():
    assert gt.loads(DARTS_V2_LEGACY).name is None


def test_save_is_canonical_and_atomic(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    g = gt.load("cdarts_b")
    gt.save(g, path)
    assert path.read_text() == gt.dumps(g)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temporary file left behind


def test_dumps_layout():
    text = gt.dumps(gt.load("darts_v2"))
    assert text.endswith("}\n")
    # one node per line: a cell reads node by node
    assert '      [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]],\n' in text
    assert text.isascii()


def test_dumps_loads_dumps_is_identical_for_unusual_names():
    g = gt.load("darts_v2")
    for name in ["naïve – ✓", "quote \" and \\ backslash", "line\nbreak", "\ud800"]:
        text = gt.dumps(type(g)(stages=g.stages, network=g.network, name=name))
        assert gt.dumps(gt.loads(text)) == text
