"""The cell kind: operations, edges, concat, network hints; every rejection names its location."""

from __future__ import annotations

import pytest

from cdarts_deploy import genotype as gt
from cdarts_deploy.genotype.cell import parse_cell
from genotype_samples import refusal_of_file, set_at, valid_cell_doc


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
        (["stages", 0, "normal_concat"], [2, 3, 4, True], "stages[0].normal_concat[3]", "found True"),
        (["stages", 0, "reduce_concat"], [], "stages[0].reduce_concat", "non-empty"),
        (["stages", 0, "normal"], [], "stages[0].normal", "non-empty list of nodes"),
        (["stages", 0], [], "stages[0]", "expected an object with normal/reduce cells"),
        (["stages"], [], "stages", "non-empty list of stages"),
        (["network", "layout"], "mobile", "network.layout", "expected 'cifar' or 'imagenet'"),
        (["network", "width"], 0, "network.width", "positive integer"),
        (["network", "cells"], True, "network.cells", "found True"),
        (["network", "depth"], 3, "network", "unknown key 'depth'"),
        (["network"], [], "network", "expected an object"),
        (["name"], 7, "name", "expected a string"),
    ],
)
def test_cell_validation_names_location(keys, value, location, fragment, tmp_path):
    doc = set_at(valid_cell_doc(), keys, value)
    err, path = refusal_of_file(doc, tmp_path)
    assert err.location == location
    assert fragment in str(err)
    assert str(path) in str(err)


def test_missing_stage_key():
    doc = valid_cell_doc()
    del doc["stages"][0]["reduce_concat"]
    with pytest.raises(gt.GenotypeError, match=r"stages\[0\]\.reduce_concat: missing"):
        gt.from_dict(doc)


def test_unknown_stage_key():
    doc = valid_cell_doc()
    doc["stages"][0]["normal_cat"] = [2, 3]
    with pytest.raises(gt.GenotypeError, match="unknown key 'normal_cat'"):
        gt.from_dict(doc)


def test_parse_cell_accepts_tuples_and_lists():
    cell = parse_cell([(("skip_connect", 0), ("sep_conv_3x3", 1))], (2,), "normal", "<test>")
    assert cell == gt.Cell(nodes=((("skip_connect", 0), ("sep_conv_3x3", 1)),), concat=(2,))


def test_operations_and_layouts():
    assert gt.SEARCH_OPS == gt.CELL_OPS + ("none",)
    assert len(gt.CELL_OPS) == 7 and "none" not in gt.CELL_OPS
    assert gt.LAYOUTS == ("cifar", "imagenet")
    # The paper's evaluation networks (Sections 4.3-4.4).
    assert gt.LAYOUT_DEFAULTS["cifar"] == dict(width=36, cells=20, num_classes=10, input_size=32)
    assert gt.LAYOUT_DEFAULTS["imagenet"] == dict(width=48, cells=14, num_classes=1000, input_size=224)
