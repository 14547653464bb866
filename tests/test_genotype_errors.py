"""GenotypeError messages: ``<source>: <location>: problem`` on one line, with bounded previews."""

from __future__ import annotations

import pytest

from cdarts_deploy.genotype.errors import PREVIEW_CHARS, GenotypeError, json_preview, repr_preview


def test_message_layout():
    err = GenotypeError("found 4, expected 3", "stages[0].kernel", "mine.json")
    assert str(err) == "mine.json: stages[0].kernel: found 4, expected 3"
    assert (err.problem, err.location, err.source) == ("found 4, expected 3", "stages[0].kernel", "mine.json")
    assert str(GenotypeError("found nothing")) == "<genotype>: found nothing"


def test_message_is_one_line():
    err = GenotypeError("found 'a\nb'", "key\nname", "dir/odd\nname.json")
    assert "\n" not in str(err)
    assert str(err) == "dir/odd\\nname.json: key\\nname: found 'a\\nb'"


@pytest.mark.parametrize(
    "value, text",
    [([1, 2], "[1, 2]"), (None, "null"), ("ab", '"ab"'), ({"a": 1}, '{"a": 1}'), ({1, 2}, "a set")],
)
def test_json_preview(value, text):
    assert json_preview(value) == text


@pytest.mark.parametrize("value, text", [("ab", "'ab'"), (True, "True"), (3.5, "3.5"), ([1], "[1]")])
def test_repr_preview(value, text):
    assert repr_preview(value) == text


def test_previews_are_bounded():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    for value in ["x" * 10**6, list(range(10**5)), deep, 10**5000, float("nan")]:
        assert len(json_preview(value)) <= PREVIEW_CHARS
        assert len(repr_preview(value)) <= PREVIEW_CHARS
    assert repr_preview(10**5000).startswith("an integer of")
