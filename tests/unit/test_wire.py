"""The replication wire format: PositionMessage encode/decode."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replication.wire import _MAX_MESSAGE, WIRE_VERSION, PositionMessage, WireError, decode, encode

NAMES = st.from_regex(r"\A[a-z0-9_\-]{1,64}\Z")
POSITIONS = st.integers(min_value=0, max_value=2**63 - 1)


def _raw(**overrides: Any) -> bytes:
    obj: dict[str, Any] = {"v": 1, "op": "POSITION", "stream": "events", "writer": "main", "pos": 5}
    obj.update(overrides)
    return json.dumps(obj).encode()


def test_encode_exact_bytes() -> None:
    assert encode(PositionMessage("events", "main", 1234)) == (
        b'{"v":1,"op":"POSITION","stream":"events","writer":"main","pos":1234}'
    )


def test_decode_bytes_and_str() -> None:
    want = PositionMessage("events", "main", 5)
    assert decode(_raw()) == want
    assert decode(_raw().decode()) == want


def test_decode_ignores_unknown_keys() -> None:
    assert decode(_raw(extra="x")) == PositionMessage("events", "main", 5)


@pytest.mark.parametrize(
    "overrides",
    [
        {"v": 2},
        {"v": "1"},
        {"v": None},
        {"op": "ROWS"},
        {"op": "position"},
        {"stream": 1},
        {"writer": None},
        {"pos": "5"},
        {"pos": 5.0},
        {"pos": True},
        {"pos": -1},
        {"pos": None},
        {"stream": ""},
        {"stream": "Events"},
        {"stream": "a" * 65},
        {"writer": "main worker"},
        {"writer": "main\n"},
        {"stream": "events\n"},
    ],
)
def test_decode_rejects_bad_fields(overrides: dict[str, Any]) -> None:
    with pytest.raises(WireError):
        decode(_raw(**overrides))


@pytest.mark.parametrize("key", ["v", "op", "stream", "writer", "pos"])
def test_decode_rejects_missing_field(key: str) -> None:
    obj = json.loads(_raw())
    del obj[key]
    with pytest.raises(WireError):
        decode(json.dumps(obj))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b"1",
        b'"POSITION"',
        b"null",
        b"\xff\xfe\xfa",
        b'{"v":1,',
        "\ud800",  # a lone surrogate cannot even be encoded as UTF-8
        b"[" * 1000,  # deeply nested, yet under the size limit
        b'{"a":' * 200 + b"1" + b"}" * 200,
    ],
)
def test_decode_rejects_garbage(data: bytes | str) -> None:
    with pytest.raises(WireError):
        decode(data)


def test_decode_rejects_oversized_message() -> None:
    padded = _raw(pad="x" * _MAX_MESSAGE)
    with pytest.raises(WireError, match="too long"):
        decode(padded)


def test_decode_accepts_message_at_size_limit() -> None:
    base = _raw(pad="")
    padded = _raw(pad="x" * (_MAX_MESSAGE - len(base)))
    assert len(padded) == _MAX_MESSAGE
    assert decode(padded).position == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stream": "", "writer": "main", "position": 1},
        {"stream": "events", "writer": "MAIN", "position": 1},
        {"stream": "events\n", "writer": "main", "position": 1},
        {"stream": "events", "writer": "main", "position": -1},
        {"stream": "events", "writer": "main", "position": True},
        {"stream": "events", "writer": "main", "position": 1.0},
    ],
)
def test_message_validates_on_construction(kwargs: dict[str, Any]) -> None:
    with pytest.raises(WireError):
        PositionMessage(**kwargs)


def test_wire_error_is_value_error() -> None:
    assert issubclass(WireError, ValueError)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # busy CI machines
@given(NAMES, NAMES, POSITIONS)
def test_round_trip(stream: str, writer: str, pos: int) -> None:
    msg = PositionMessage(stream, writer, pos)
    data = encode(msg)
    assert isinstance(data, bytes)
    assert json.loads(data)["v"] == WIRE_VERSION
    assert decode(data) == msg
    assert decode(data.decode("ascii")) == msg


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # busy CI machines
@given(st.binary(max_size=_MAX_MESSAGE + 16))
def test_decode_arbitrary_bytes_only_raises_wire_error(data: bytes) -> None:
    try:
        msg = decode(data)
    except WireError:
        return
    assert isinstance(msg, PositionMessage)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # busy CI machines
@given(st.text(max_size=_MAX_MESSAGE + 16))
def test_decode_arbitrary_text_only_raises_wire_error(data: str) -> None:
    try:
        msg = decode(data)
    except WireError:
        return
    assert isinstance(msg, PositionMessage)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # busy CI machines
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "v": JSON_VALUES | st.just(1),
            "op": JSON_VALUES | st.just("POSITION"),
            "stream": JSON_VALUES | NAMES,
            "writer": JSON_VALUES | NAMES,
            "pos": JSON_VALUES | POSITIONS,
        },
    )
)
def test_decode_arbitrary_objects_only_raises_wire_error(obj: dict[str, Any]) -> None:
    try:
        msg = decode(json.dumps(obj))
    except WireError:
        return
    assert msg == PositionMessage(obj["stream"], obj["writer"], obj["pos"])
