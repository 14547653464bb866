"""JSON read within bounds: every document a user hands in ends as a value or one quick one-line error."""

import time

import pytest

from cdarts_deploy import bounded_json
from cdarts_deploy.bounded_json import JSONInputError
from cdarts_deploy.errors import UserError


def _refuse(text, **kw):
    start = time.perf_counter()
    with pytest.raises(JSONInputError) as info:
        bounded_json.loads(text, source="in.json", **kw)
    assert time.perf_counter() - start < 2.0
    assert "\n" not in str(info.value) and isinstance(info.value, UserError)
    return info.value


def test_valid_documents_load():
    assert bounded_json.loads('{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    assert bounded_json.loads("[" * 32 + "]" * 32, max_depth=32)


def test_deep_nesting_is_refused_before_parsing():
    err = _refuse("[" * 200_000 + "]" * 200_000, expected="options")
    assert err.location == "line 1 column 33" and "nested more than 32 levels" in err.problem


def test_brackets_inside_strings_do_not_count():
    assert bounded_json.loads('["' + "[" * 1000 + '\\"[["]') == ["[" * 1000 + '"[[']


@pytest.mark.parametrize("text, words", [
    ('{"a": 1, "a": 2}', "twice"),
    ("[NaN]", "finite"),
    ("[1e999]", "finite"),
    ("[" + "9" * 5000 + "]", "thousands of digits"),
    ("{'a': 1}", "invalid JSON"),
])
def test_malformed_or_unbounded_values_are_refused(text, words):
    assert words in str(_refuse(text))


def test_size_bound_on_text_and_on_files(tmp_path):
    assert "at most 100 bytes" in str(_refuse(" " * 101, max_bytes=100))
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 2000)
    with pytest.raises(JSONInputError, match="larger than 1000 bytes"):
        bounded_json.load(big, max_bytes=1000)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(JSONInputError, match="UTF-8"):
        bounded_json.load(binary)
