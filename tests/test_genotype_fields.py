"""Checks on single JSON fields: closed key sets, integers (never bools) within bounds, numbers, strings."""

from __future__ import annotations

import pytest

from cdarts_deploy.genotype import fields
from cdarts_deploy.genotype.errors import GenotypeError


def test_check_keys():
    fields.check_keys({"a": 1}, ["a", "b"], "", "s")
    with pytest.raises(GenotypeError) as info:
        fields.check_keys({"a": 1, "zz": 2}, ["a", "b"], "", "s")
    assert str(info.value) == "s: zz: found unknown key 'zz', expected only a, b"
    with pytest.raises(GenotypeError, match="unknown key 1"):
        fields.check_keys({1: 1, "c": 2}, ["a"], "net", "s")  # keys of mixed types still sort


@pytest.mark.parametrize("value", [True, False, 1.0, "1", None, [1]])
def test_check_int_refuses_non_integers(value):
    with pytest.raises(GenotypeError, match="expected a count"):
        fields.check_int(value, "x", "s", "a count")


def test_bounded_int():
    assert fields.bounded_int(1, 1, 8, "x", "s") == 1
    assert fields.bounded_int(8, 1, 8, "x", "s") == 8
    with pytest.raises(GenotypeError, match="found 9, expected a positive integer <= 8"):
        fields.bounded_int(9, 1, 8, "x", "s")
    with pytest.raises(GenotypeError, match="found size 7, expected an integer 8..4096"):
        fields.bounded_int(7, 8, 4096, "x", "s", "size")
    with pytest.raises(GenotypeError, match="found True"):
        fields.bounded_int(True, 1, 8, "x", "s")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), True, "1", None])
def test_check_number_refuses_non_finite_and_non_numbers(value):
    with pytest.raises(GenotypeError, match="expected a number"):
        fields.check_number(value, "x", "s")


def test_check_number_accepts_huge_ints():
    assert fields.check_number(10**400, "x", "s") == 10**400


def test_check_count():
    fields.check_count([1, 2], 2, "nodes", "x", "s")
    with pytest.raises(GenotypeError, match="found 3 nodes, expected at most 2"):
        fields.check_count([1, 2, 3], 2, "nodes", "x", "s")


def test_optional_text():
    assert fields.optional_text({}, "name", 5, "s") is None
    assert fields.optional_text({"name": "abcde"}, "name", 5, "s") == "abcde"
    with pytest.raises(GenotypeError, match="found a string of 6 characters, expected at most 5"):
        fields.optional_text({"name": "abcdef"}, "name", 5, "s")
    with pytest.raises(GenotypeError, match="expected a string"):
        fields.optional_text({"name": 3}, "name", 5, "s")
