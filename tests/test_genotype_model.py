"""The in-memory genotype: equality, readable text, stage lookup, blocks as arch strings."""

from __future__ import annotations

import pytest

from cdarts_deploy import genotype as gt


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


def test_str_lists_network_hints():
    assert "network: {'layout': 'cifar'" in str(gt.load("cdarts_cifar"))


def test_genotypes_are_frozen_and_hashable():
    g = gt.load("cdarts_b")
    with pytest.raises(AttributeError):
        g.name = "other"  # type: ignore[misc]
    assert hash(g) == hash(gt.load("cdarts_b"))
    assert g.kind == "chain" and gt.load("darts_v2").kind == "cell"


@pytest.mark.parametrize(
    "block, text",
    [
        (gt.Block("ir", 5, 6, 2, 40, 0.25, 2), "ir_r2_k5_s2_e6_c40_se0.25"),
        (gt.Block("ds", 3, 1, 1, 16), "ds_r1_k3_s1_e1_c16"),
        (gt.Block("cn", 1, 1, 1, 960), "cn_r1_k1_s1_c960"),
        (gt.Block("ir", 3, 4.5, 1, 24, 0.5), "ir_r1_k3_s1_e4.5_c24_se0.5"),
    ],
)
def test_block_arch_string(block, text):
    assert block.to_arch_string() == text
    assert gt.parse_arch_string(text) == block


def test_chain_network_defaults():
    assert gt.ChainNetwork() == gt.ChainNetwork(None, None, 16, 1280)
    assert gt.CellNetwork() == gt.CellNetwork(None, None, None, None, None)
