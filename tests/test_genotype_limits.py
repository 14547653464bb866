"""Every input is bounded: too large, too deep or non-finite input gets one quick one-line GenotypeError."""

from __future__ import annotations

import json
import time

import pytest

from cdarts_deploy import bounded_json
from cdarts_deploy import genotype as gt
from cdarts_deploy.genotype import limits
from genotype_samples import DARTS_V2_LEGACY, set_at, valid_cell_doc, valid_chain_doc

SECONDS = 2.0  # CPU seconds: every refusal below must come well within this, however busy the machine


def refuse(call, *args) -> gt.GenotypeError:
    """Run ``call(*args)``, expect one GenotypeError quickly, and return it."""
    start = time.process_time()  # CPU time, so other load on the machine does not count
    with pytest.raises(gt.GenotypeError) as info:
        call(*args)
    assert time.process_time() - start < SECONDS
    assert "\n" not in str(info.value)
    return info.value


def cell_doc_with_nodes(count: int) -> dict:
    nodes = [[["skip_connect", 0], ["sep_conv_3x3", 1]] for _ in range(count)]
    doc = valid_cell_doc()
    doc["stages"][0].update(normal=nodes, normal_concat=[2, 3], reduce=nodes, reduce_concat=[2, 3])
    return doc


def legacy_with_nodes(count: int) -> str:
    nodes = ", ".join(["[('skip_connect', 0), ('sep_conv_3x3', 1)]"] * count)
    return f"Genotype(normal=[{nodes}], normal_concat=[2, 3], reduce=[{nodes}], reduce_concat=[2, 3])"


# --- whole text -----------------------------------------------------------------------------------


def test_deeply_nested_json_is_one_line_error():
    err = refuse(gt.loads, "[" * 100_000 + "]" * 100_000, "deep.json")
    assert str(err) == (
        "deep.json: line 1 column 33: found JSON nested more than 32 levels deep, expected a genotype JSON object "
        "(at most 32 levels)"
    )


def test_deep_nesting_inside_a_valid_document(tmp_path):
    doc = valid_cell_doc()
    text = json.dumps(doc).replace('"stages"', '"x": ' + "[" * 40 + "]" * 40 + ', "stages"', 1)
    path = tmp_path / "deep.json"
    path.write_text(text)
    err = refuse(gt.load, path)
    # The object is level 1; the 32nd "[" opens level 33 (columns count from 1).
    column = text.index("[" * 40) + 31 + 1
    assert err.location == f"line 1 column {column}"
    assert str(err).startswith(f"{path}: line 1 column {column}: found JSON nested more than 32 levels")


def test_depth_limit_admits_its_bound_and_ignores_brackets_in_strings():
    bounded_json.check_depth("[" * limits.MAX_JSON_DEPTH + "]" * limits.MAX_JSON_DEPTH, limits.MAX_JSON_DEPTH, "x", "s")
    bounded_json.check_depth('["' + "[" * 1000 + '\\"[["]', limits.MAX_JSON_DEPTH, "x", "s")
    doc = valid_cell_doc()
    doc["description"] = "[{" * 500
    assert gt.loads(json.dumps(doc)).description == "[{" * 500


def test_huge_text_is_refused():
    err = refuse(gt.loads, "{" + " " * limits.MAX_FILE_BYTES + "}", "big.json")
    assert "expected a genotype of at most 1048576 bytes" in str(err)


def test_huge_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.json"
    with open(path, "wb") as fh:
        fh.truncate(1 << 30)  # a 1 GiB (sparse) file
    err = refuse(gt.load, path)
    assert "found a file larger than 1048576 bytes" in str(err)


def test_file_at_the_size_bound_is_read(tmp_path):
    doc = valid_cell_doc()
    text = json.dumps(doc)
    path = tmp_path / "padded.json"
    path.write_text(text + " " * (limits.MAX_FILE_BYTES - len(text)))
    assert gt.load(path) == gt.load("darts_v2")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_non_finite_numbers_are_refused(literal):
    text = json.dumps(valid_chain_doc()).replace('"expansion": 1', f'"expansion": {literal}', 1)
    err = refuse(gt.loads, text, "nan.json")
    assert "expected a finite number" in str(err)


def test_duplicate_keys_are_refused():
    text = json.dumps(valid_cell_doc()).replace('"version": 1', '"version": 1, "version": 1', 1)
    err = refuse(gt.loads, text, "dup.json")
    assert str(err) == "dup.json: found key 'version' twice in one object, expected each key once"


def test_integer_with_thousands_of_digits_is_refused():
    err = refuse(gt.loads, '{"version": ' + "1" * 5000 + "}", "big.json")
    assert "found an integer with thousands of digits" in str(err)


def test_huge_but_readable_integers_are_refused_by_range():
    text = json.dumps(valid_chain_doc()).replace('"expansion": 1', '"expansion": ' + "9" * 400, 1)
    err = refuse(gt.loads, text)
    assert err.location == "stages[0][0].expansion"


# --- legacy text ----------------------------------------------------------------------------------


def test_legacy_cell_of_50000_nodes_is_refused_quickly(tmp_path):
    text = legacy_with_nodes(50_000)
    assert "Genotype(...) text of" in str(refuse(gt.from_dict, {"0": text}, "best.json"))
    assert "Genotype(...) text of" in str(refuse(gt.from_dict, text, "best.json"))
    path = tmp_path / "best_genotype.json"
    path.write_text(json.dumps({"0": text}))
    assert "larger than 1048576 bytes" in str(refuse(gt.load, path))


def test_legacy_cell_over_the_node_bound():
    err = refuse(gt.loads, legacy_with_nodes(limits.MAX_NODES_PER_CELL + 1), "best.json")
    assert str(err) == "best.json: genotype.normal: found 33 nodes, expected at most 32"
    assert len(gt.loads(legacy_with_nodes(limits.MAX_NODES_PER_CELL)).stages[0].normal.nodes) == 32


def test_legacy_syntax_tree_node_bound():
    text = "Genotype(normal=[" + "0," * 30_000 + "], normal_concat=[2], reduce=[], reduce_concat=[2])"
    assert len(text) < limits.MAX_LEGACY_CHARS
    err = refuse(gt.loads, text)
    assert "more than 20000 syntax nodes" in str(err)


def test_legacy_syntax_tree_depth_bound():
    text = "Genotype(normal=" + "[" * 100 + "]" * 100 + ", normal_concat=[2], reduce=[], reduce_concat=[2])"
    err = refuse(gt.loads, text)
    assert "nested more than 32 levels deep" in str(err)


@pytest.mark.parametrize(
    "text",
    [
        "-" * 60_000 + "1",  # exhausts the parser's stack
        "a." * 20_000 + "b",  # recursion in the parser
        "(" * 300 + ")" * 300,  # too many nested parentheses
        "Genotype(normal=" + "1" * 5000 + ")",  # integer literal beyond the digit limit
        "Genotype(\0)",
    ],
)
def test_legacy_parser_limits_are_one_line_errors(text):
    refuse(gt.loads, text)


# --- fields ---------------------------------------------------------------------------------------


def _chain_stage(blocks: int, repeats: int = 1) -> list:
    return [{"type": "ir", "kernel": 3, "expansion": 4, "stride": 1, "out_channels": 24, "repeats": repeats}] * blocks


@pytest.mark.parametrize(
    "build, location, fragment",
    [
        (lambda: cell_doc_with_nodes(33), "stages[0].normal", "found 33 nodes, expected at most 32"),
        (lambda: cell_doc_with_nodes(50_000), "stages[0].normal", "found 50000 nodes, expected at most 32"),
        (lambda: set_at(valid_cell_doc(), ["stages"], valid_cell_doc()["stages"] * 17), "stages", "found 17 stages"),
        (lambda: set_at(valid_cell_doc(), ["network", "width"], 1025), "network.width", "found 1025"),
        (lambda: set_at(valid_cell_doc(), ["network", "cells"], 65), "network.cells", "found 65"),
        (lambda: set_at(valid_cell_doc(), ["network", "num_classes"], 100_001), "network.num_classes", "100001"),
        (lambda: set_at(valid_cell_doc(), ["network", "input_size"], 7), "network.input_size", "an integer 8..4096"),
        (lambda: set_at(valid_cell_doc(), ["network", "input_size"], 4097), "network.input_size", "found 4097"),
        (lambda: set_at(valid_cell_doc(), ["name"], "n" * 256), "name", "found a string of 256 characters"),
        (lambda: set_at(valid_cell_doc(), ["description"], "d" * 2001), "description", "expected at most 2000"),
        (lambda: set_at(valid_chain_doc(), ["stages"], [_chain_stage(1)] * 17), "stages", "found 17 stages"),
        (lambda: set_at(valid_chain_doc(), ["stages", 1], _chain_stage(65)), "stages[1]", "found 65 blocks"),
        (lambda: set_at(valid_chain_doc(), ["stages", 1, 0, "repeats"], 17), "stages[1][0].repeats",
         "found repeats 17"),
        (lambda: set_at(valid_chain_doc(), ["stages"], [_chain_stage(10, 16)] * 2), "stages", "found 320 blocks"),
        (lambda: set_at(valid_chain_doc(), ["stages", 1, 0, "out_channels"], 8193), "stages[1][0].out_channels",
         "found out_channels 8193"),
        (lambda: set_at(valid_chain_doc(), ["network", "stem_channels"], 8193), "network.stem_channels", "8193"),
        (lambda: set_at(valid_chain_doc(), ["network", "head_channels"], 10**30), "network.head_channels", "<= 8192"),
        (lambda: set_at(valid_chain_doc(), ["stages", 1, 0, "kernel"], 9), "stages[1][0].kernel", "found kernel 9"),
        (lambda: set_at(valid_chain_doc(), ["stages", 1, 0, "kernel"], True), "stages[1][0].kernel", "found True"),
        (lambda: set_at(valid_chain_doc(), ["stages", 1, 0, "expansion"], 17), "stages[1][0].expansion",
         "found expansion 17"),
        (lambda: set_at(valid_chain_doc(), ["stages", 1, 0, "expansion"], float("inf")), "stages[1][0].expansion",
         "expected a number"),
        (lambda: set_at(valid_chain_doc(), ["stages", 1, 0, "se_ratio"], float("nan")), "stages[1][0].se_ratio",
         "expected a number"),
        (lambda: set_at(valid_chain_doc(), ["stages", 1, 0], "ir_r1_k3_s1_e4_c24" + "_se0.25" * 40), "stages[1][0]",
         "arch string of 298 characters"),
        (lambda: {"arch": [["ds_r1_k3_s1_e1_c16"]] * 17}, "arch", "found 17 stages"),
        (lambda: {"base": [["ds_r1_k3_s1_e1_c16"] * 65], "choices": [[0] * 65]}, "base[0]", "found 65 blocks"),
        (lambda: {str(i): DARTS_V2_LEGACY for i in range(17)}, "", "found 17 stages"),
    ],
)
def test_each_limit(build, location, fragment):
    err = refuse(gt.from_dict, build(), "lim.json")
    assert err.location == location
    assert fragment in str(err)


@pytest.mark.parametrize(
    "build",
    [
        lambda: cell_doc_with_nodes(32),
        lambda: set_at(valid_cell_doc(), ["stages"], valid_cell_doc()["stages"] * 16),
        lambda: set_at(valid_cell_doc(), ["network"], dict(width=1024, cells=64, num_classes=100_000, input_size=4096)),
        lambda: set_at(valid_cell_doc(), ["network", "input_size"], 8),
        lambda: set_at(valid_cell_doc(), ["name"], "n" * 255),
        lambda: set_at(valid_chain_doc(), ["stages"], [_chain_stage(64, 4)]),
        lambda: set_at(valid_chain_doc(), ["stages"], [_chain_stage(1, 16)] * 16),
        lambda: set_at(valid_chain_doc(), ["network"], dict(stem_channels=8192, head_channels=8192)),
        lambda: set_at(valid_chain_doc(), ["stages", 1, 0], {"type": "ir", "kernel": 7, "expansion": 16, "stride": 2,
                                                             "out_channels": 8192, "se_ratio": 0.99, "repeats": 16}),
        lambda: {str(i): DARTS_V2_LEGACY for i in range(16)},
    ],
)
def test_limits_admit_their_bound(build):
    doc = build()
    g = gt.from_dict(doc)
    assert gt.dumps(gt.loads(gt.dumps(g))) == gt.dumps(g)
