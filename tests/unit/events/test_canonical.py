"""Canonical JSON, including the spec appendix examples."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from homeserver.events.canonical import (
    InvalidEventError,
    check_canonical_json,
    encode_canonical_json,
)

APPENDIX_EXAMPLES: list[tuple[str, bytes]] = [
    ("{}", b"{}"),
    ('{"one": 1, "two": "Two"}', b'{"one":1,"two":"Two"}'),
    ('{"b": "2", "a": "1"}', b'{"a":"1","b":"2"}'),
    ('{"b":"2","a":"1"}', b'{"a":"1","b":"2"}'),
    (
        """{"auth": {"success": true, "mxid": "@john.doe:example.com",
            "profile": {"display_name": "John Doe", "three_pids": [
                {"medium": "email", "address": "john.doe@example.org"},
                {"medium": "msisdn", "address": "123456789"}]}}}""",
        b'{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe",'
        b'"three_pids":[{"address":"john.doe@example.org","medium":"email"},'
        b'{"address":"123456789","medium":"msisdn"}]},"success":true}}',
    ),
    ('{"a": "日本語"}', '{"a":"日本語"}'.encode()),
    ('{"本": 2, "日": 1}', '{"日":1,"本":2}'.encode()),
    ('{"a": "\\u65E5"}', '{"a":"日"}'.encode()),
    ('{"a": null}', b'{"a":null}'),
]


@pytest.mark.parametrize(("source", "expected"), APPENDIX_EXAMPLES)
def test_appendix_examples(source: str, expected: bytes) -> None:
    assert encode_canonical_json(json.loads(source)) == expected
    assert encode_canonical_json(json.loads(source), strict=False) == expected


def test_appendix_negative_zero_and_exponent_lenient() -> None:
    # {"a": -0, "b": 1e10}: the exponent form parses to a float, which only the
    # lenient (v1–5) mode turns back into an integer.
    value = json.loads('{"a": -0, "b": 1e10}')
    assert encode_canonical_json(value, strict=False) == b'{"a":0,"b":10000000000}'
    with pytest.raises(InvalidEventError, match=r"float at b"):
        encode_canonical_json(value)
    assert encode_canonical_json({"a": -0.0}, strict=False) == b'{"a":0}'


def test_integer_range_strict() -> None:
    top, bottom = 2**53 - 1, -(2**53) + 1
    assert encode_canonical_json({"a": top, "b": bottom}) == (
        f'{{"a":{top},"b":{bottom}}}'.encode()
    )
    with pytest.raises(InvalidEventError, match=r"integer at a "):
        encode_canonical_json({"a": top + 1})
    with pytest.raises(InvalidEventError, match=r"integer at a "):
        encode_canonical_json({"a": bottom - 1})
    assert encode_canonical_json({"a": 2**63}, strict=False) == f'{{"a":{2**63}}}'.encode()


def test_error_names_nested_path() -> None:
    with pytest.raises(InvalidEventError, match=r"content\.info\.sizes\[2\]"):
        encode_canonical_json({"content": {"info": {"sizes": [1, 2, 3.5]}}})
    with pytest.raises(InvalidEventError, match=r"<root>"):
        encode_canonical_json(1.5)


def test_non_finite_floats_rejected_even_lenient() -> None:
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(InvalidEventError):
            encode_canonical_json({"x": bad}, strict=False)


def test_lenient_non_integral_float() -> None:
    assert encode_canonical_json({"x": 1.5}, strict=False) == b'{"x":1.5}'


def test_booleans_are_not_numbers() -> None:
    assert encode_canonical_json([True, False, None]) == b"[true,false,null]"


def test_non_json_values_rejected() -> None:
    with pytest.raises(InvalidEventError, match="non-string object key"):
        encode_canonical_json({1: "a"})
    with pytest.raises(InvalidEventError, match="bytes"):
        encode_canonical_json({"a": b"raw"})
    with pytest.raises(InvalidEventError, match="set"):
        encode_canonical_json({"a": {1, 2}})
    with pytest.raises(InvalidEventError, match="surrogate"):
        encode_canonical_json({"a": "\ud800"})
    with pytest.raises(InvalidEventError, match="surrogate"):
        encode_canonical_json({"\udfff": 1})


def test_escapes() -> None:
    s = '"\\\n\t\r\b\f\x01\x1f\x7f/é'
    assert encode_canonical_json(s) == '"\\"\\\\\\n\\t\\r\\b\\f\\u0001\\u001f\x7f/é"'.encode()


def test_keys_sorted_by_code_point_not_utf16() -> None:
    # U+FF61 sorts before U+1F600 by code point, but after it in UTF-16 code units.
    value = {"\U0001f600": 1, "\uff61": 2}
    assert encode_canonical_json(value) == '{"\uff61":2,"\U0001f600":1}'.encode()


def test_tuples_and_mappings() -> None:
    from types import MappingProxyType

    assert encode_canonical_json(MappingProxyType({"b": (1, 2), "a": []})) == (
        b'{"a":[],"b":[1,2]}'
    )


def test_check_canonical_json() -> None:
    check_canonical_json({"a": [1, {"b": None}]})
    with pytest.raises(InvalidEventError):
        check_canonical_json({"a": 0.5})
    check_canonical_json({"a": 2**60}, strict=False)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(), c, max_size=5),
    max_leaves=20,
)


@given(_json)
def test_round_trip(value: Any) -> None:
    encoded = encode_canonical_json(value)
    assert json.loads(encoded.decode("utf-8")) == value
    # Canonical: re-encoding the decoded form gives identical bytes.
    assert encode_canonical_json(json.loads(encoded)) == encoded
    # No insignificant whitespace, sorted keys, UTF-8 unescaped: the shortest JSON form.
    assert encoded == json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), sort_keys=True
    ).encode("utf-8")


@given(st.dictionaries(st.text(max_size=4), st.integers(0, 9), max_size=8), st.data())
def test_key_order_independent(value: dict[str, int], data: Any) -> None:
    order = data.draw(st.permutations(list(value)))
    assert encode_canonical_json({k: value[k] for k in order}) == encode_canonical_json(value)
