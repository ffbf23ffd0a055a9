"""esgz.oci.gojson writes what Go's encoding/json writes (checked against Go itself)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esgz.oci import gojson
from esgz.oci.manifest import rewrite_config
from tests.oci.gocheck import ask

TEXT = st.text(max_size=8)  # includes control characters, HTML characters, surrogates
NUMBERS = st.one_of(
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1e-6, 9.99e-7, 1e21, 9.99e20, 1e-7, 1.5e300, 123456789.125]),
)
VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, TEXT),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=12,
)


def _collect(strategy: st.SearchStrategy[object], count: int) -> list[object]:
    found: list[object] = []

    @settings(max_examples=count, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(value: object) -> None:
        found.append(value)

    collect()
    return found


def test_dumps_matches_go_marshal() -> None:
    values = _collect(VALUES, 400)
    # Go decodes into interface{} (float64 numbers, sorted map keys) and marshals again.
    texts = [json.dumps(value) for value in values]
    answers = ask([{"op": "remarshal", "config": text} for text in texts])
    for text, answer in zip(texts, answers, strict=True):
        assert "error" not in answer, text
        as_go_sees_it = json.loads(text, parse_int=float)  # every number is a float64
        assert gojson.dumps(as_go_sees_it, sort_keys=True) == answer["json"].encode(), text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, "1"),
        (-0.0, "-0"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (1.5e-6, "0.0000015"),
        ("<a&b>\u2028\b\f\x00\x7f", '"\\u003ca\\u0026b\\u003e\\u2028\\u0008\\u000c\\u0000\x7f"'),
    ],
)
def test_dumps_examples(value: object, expected: str) -> None:
    assert gojson.dumps(value) == expected.encode()


def test_compact_keeps_spelling_and_escapes_html() -> None:
    raw = '{ "a" : [ 1.50 , "x \\u00e9 <" ] ,\n "b":"\\/" }'
    assert gojson.compact(raw) == '{"a":[1.50,"x \\u00e9 \\u003c"],"b":"\\/"}'


def test_raw_members() -> None:
    assert gojson.raw_members(' { "b" : [1, 2] , "a":{"x" : 1}, "b": 3 } ') == {
        "b": "3",
        "a": '{"x" : 1}',
    }
    assert gojson.raw_members("{}") == {}
    for bad in ["[]", "{", '{"a" 1}', '{"a":1,}', '{"a":1} x', ""]:
        with pytest.raises(ValueError):  # noqa: PT011
            gojson.raw_members(bad)


OLD = "sha256:" + "1" * 64
NEW = "sha256:" + "2" * 64


def test_rewrite_config_matches_go_on_random_configs() -> None:
    tops = _collect(st.dictionaries(TEXT, VALUES, max_size=5), 150)
    configs = _collect(st.dictionaries(TEXT, VALUES, max_size=4), 150)
    texts = []
    for number, (top, config) in enumerate(zip(tops, configs, strict=False)):
        document = dict(top)  # type: ignore[call-overload]  # (hypothesis values are objects)
        document["rootfs"] = {"type": "layers", "diff_ids": [OLD, NEW]}
        document["config"] = {**config, "Image": "sha256:dummy"}  # type: ignore[dict-item]
        indent = [None, 1, 4][number % 3]
        texts.append(json.dumps(document, indent=indent, ensure_ascii=number % 2 == 0))
    answers = ask([{"op": "rewrite", "config": text, "map": {OLD: NEW}} for text in texts])
    compared = 0
    for text, answer in zip(texts, answers, strict=True):
        if "error" in answer:  # a standard field of the wrong type: containerd fails too
            continue
        assert rewrite_config(text.encode(), {OLD: NEW}) == answer["config"].encode(), text
        compared += 1
    assert compared > 50
