"""Property: any input loads and round-trips byte-identically, or raises one GenotypeError, quickly.

Inputs are arbitrary JSON values, zoo documents mutated in many ways (dropped, replaced, duplicated
and swapped keys, deep nesting, huge numbers, long lists), mutated legacy ``Genotype(...)`` text, and
arbitrary bytes written as a file.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cdarts_deploy import genotype as gt
from genotype_samples import DARTS_V2_FLAT, DARTS_V2_LEGACY

SECONDS = 2.0
# No example database: the test leaves no files in the repository.
FUZZ = settings(deadline=int(SECONDS * 1000), database=None, suppress_health_check=[HealthCheck.too_slow])

ZOO_DOCS = {name: gt.to_dict(gt.load(name)) for name in gt.zoo_names()}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["cell", "chain", "cdarts-genotype", "sep_conv_3x3", "skip_connect", "ir_r1_k3_s1_e4_c24",
                       "cdarts_b_base", "Genotype(", "imagenet"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=20,
)
# Keys the format knows: mutations with them reach deeper into the validation.
known_keys = st.sampled_from([
    "format", "version", "kind", "name", "description", "stages", "network", "arch", "base", "choices",
    "normal", "normal_concat", "reduce", "reduce_concat", "layout", "width", "cells", "num_classes", "input_size",
    "type", "kernel", "expansion", "stride", "out_channels", "se_ratio", "repeats", "stem_channels", "0",
])
huge_numbers = st.sampled_from(
    [10**400, -(10**400), 2**63, -(2**63), 1e308, -1e308, 5e-324, float("inf"), float("nan"), 0, -1, 1.5]
)


def check_text(text: str) -> None:
    """The property for one text: a genotype whose canonical form round-trips, or one GenotypeError."""
    start = time.monotonic()
    try:
        g = gt.loads(text, "fuzz.json")
    except gt.GenotypeError as err:
        assert "\n" not in str(err) and str(err).startswith("fuzz.json: ")
        event("refused")
    else:
        event("loaded")
        canonical = gt.dumps(g)
        assert gt.dumps(gt.loads(canonical)) == canonical
    assert time.monotonic() - start < SECONDS


# --- mutations of a document --------------------------------------------------------------------


def paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in ``doc`` (as key paths), the root's children first."""
    found = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    for key, value in items:
        found.append(prefix + (key,))
        found.extend(paths(value, prefix + (key,)))
    return found


def get_at(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def set_at(doc: Any, path: tuple, value: Any) -> None:
    get_at(doc, path[:-1])[path[-1]] = value


def nest(value: Any, depth: int, as_list: bool) -> Any:
    for _ in range(depth):
        value = [value] if as_list else {"x": value}
    return value


STRUCTURAL = ["drop", "replace", "rename", "duplicate", "swap"]
SIZE = ["nest", "huge", "long"]


def mutate(doc: dict, data: st.DataObject) -> str:
    """Apply 0-2 structural mutations and then one of any kind; return the JSON text (NaN, Infinity allowed).

    The size mutations come last: a long list repeats one object, which later mutations must not walk into.
    """
    duplicate: tuple[str, Any] | None = None
    kinds = [data.draw(st.sampled_from(STRUCTURAL)) for _ in range(data.draw(st.integers(0, 2)))]
    kinds.append(data.draw(st.sampled_from(STRUCTURAL + SIZE)))
    for how in kinds:
        places = paths(doc)
        if not places:
            break
        path = data.draw(st.sampled_from(places))
        value = get_at(doc, path)
        parent = get_at(doc, path[:-1])
        if how == "drop":
            del parent[path[-1]]
        elif how == "replace":
            set_at(doc, path, data.draw(json_values))
        elif how == "rename" and isinstance(parent, dict):
            parent[data.draw(known_keys | st.text(max_size=8))] = parent.pop(path[-1])
        elif how == "duplicate" and isinstance(parent, dict):
            duplicate = (path[-1], data.draw(json_values | st.just(value)))
        elif how == "swap":
            other = data.draw(st.sampled_from(places))
            if other[: len(path)] != path and path[: len(other)] != other:  # neither holds the other
                other_value = get_at(doc, other)
                set_at(doc, other, value)
                set_at(doc, path, other_value)
        elif how == "nest":
            set_at(doc, path, nest(value, data.draw(st.integers(1, 200)), data.draw(st.booleans())))
        elif how == "huge":
            set_at(doc, path, data.draw(huge_numbers))
        elif how == "long":
            set_at(doc, path, [value] * data.draw(st.integers(2, 5000)))
    text = json.dumps(doc)
    if duplicate is not None:
        key, value = duplicate
        marker = json.dumps(key) + ": "
        text = text.replace(marker, marker + json.dumps(value) + ", " + marker, 1)
    return text


# --- properties -----------------------------------------------------------------------------------


# Objects under a valid header (and known keys) get past the first checks.
headed_objects = st.builds(
    lambda kind, body: {"format": gt.FORMAT, "version": gt.VERSION, "kind": kind, **body},
    st.sampled_from(["cell", "chain"]),
    st.dictionaries(known_keys, json_values, max_size=5),
)


@settings(FUZZ, max_examples=200)
@given(json_values | headed_objects)
def test_arbitrary_json_loads_or_one_error(value):
    check_text(json.dumps(value))


@settings(FUZZ, max_examples=300)
@given(st.sampled_from(sorted(ZOO_DOCS)), st.data())
def test_mutated_zoo_documents_load_or_one_error(name, data):
    check_text(mutate(copy.deepcopy(ZOO_DOCS[name]), data))


def _legacy_mutations() -> st.SearchStrategy[Callable[[str], str]]:
    tokens = ["'sep_conv_3x3'", "'none'", "0", "1", "5", "-1", "True", "range(2, 6)", "[", "]", "(", ")", ",",
              "x", "__import__('os')", "1e400", "'" + "a" * 300 + "'", "[" * 150, "9" * 5000]

    def replace_slice(text: str, start: int, length: int, token: str) -> str:
        start = start % (len(text) + 1)
        return text[:start] + token + text[start + length:]

    return st.builds(
        lambda start, length, token: (lambda text: replace_slice(text, start, length, token)),
        st.integers(0, 2000), st.integers(0, 12), st.sampled_from(tokens),
    )


@settings(FUZZ, max_examples=150)
@given(st.sampled_from([DARTS_V2_LEGACY, DARTS_V2_FLAT]), st.lists(_legacy_mutations(), min_size=1, max_size=4),
       st.booleans())
def test_mutated_legacy_text_loads_or_one_error(text, edits, as_json):
    for edit in edits:
        text = edit(text)
    check_text(json.dumps({"0": text, "1": text}) if as_json else text)


@pytest.fixture(scope="module")
def scratch() -> Path:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


@settings(FUZZ, max_examples=150)
@given(st.binary(max_size=3000) | st.sampled_from([b"\xef\xbb\xbf{}", b"\xff\xfe{", b"[" * 5000, b"\0" * 100]))
def test_arbitrary_bytes_as_a_file_load_or_one_error(scratch, data):
    path = scratch / "fuzz.json"
    path.write_bytes(data)
    start = time.monotonic()
    try:
        g = gt.load(path)
    except gt.GenotypeError as err:
        assert "\n" not in str(err)
    else:
        canonical = gt.dumps(g)
        assert gt.dumps(gt.loads(canonical)) == canonical
    assert time.monotonic() - start < SECONDS
