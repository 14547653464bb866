"""The built-in genotypes: listed, loadable by name, round-trip, match the published tables."""

from __future__ import annotations

from importlib import resources

import pytest

from cdarts_deploy import genotype as gt
from cdarts_deploy.genotype import zoo


def test_zoo_lists_every_builtin():
    assert set(gt.zoo_names()) == {
        "darts_v1", "darts_v2", "pdarts", "pcdarts_cifar", "pcdarts_imagenet",
        "cdarts_cifar", "cdarts_imagenet", "cdarts_a", "cdarts_b",
    }


def test_zoo_files_are_package_data_of_cdarts_deploy():
    folder = resources.files("cdarts_deploy") / "zoo"
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".json")) == [
        f"{name}.json" for name in gt.zoo_names()
    ]


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


@pytest.mark.parametrize("name", gt.zoo_names())
def test_zoo_files_are_stored_canonically(name):
    assert zoo.zoo_text(name) == gt.dumps(gt.load(name))


def test_zoo_matches_reference_table():
    # cdarts_imagenet, node 5 of the reduction cell: sep_conv_3x3<-3, dil_conv_3x3<-4 (zoo-genotypes.md)
    g = gt.load("cdarts_imagenet")
    assert g.stages[0].reduce.nodes[3] == (("sep_conv_3x3", 3), ("dil_conv_3x3", 4))
    assert g.network.layout == "imagenet" and g.network.width == 48 and g.network.cells == 14
    c = gt.load("cdarts_cifar")
    assert c.network.layout == "cifar" and c.network.width == 36 and c.network.cells == 20


def test_unknown_zoo_name():
    with pytest.raises(gt.GenotypeError, match="no file or zoo genotype named 'cdarts_c'"):
        gt.load("cdarts_c")
    with pytest.raises(gt.GenotypeError, match="cdarts_a, cdarts_b"):
        zoo.zoo_text("cdarts_c")


def test_zoo_name_shape():
    assert zoo.looks_like_zoo_name("cdarts_b")
    assert not zoo.looks_like_zoo_name("cdarts_b.json")
    assert not zoo.looks_like_zoo_name("runs/genotype")
