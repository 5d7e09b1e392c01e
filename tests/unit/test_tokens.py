"""StreamToken: the /sync and /messages pagination token codec."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homeserver.sync.tokens import STREAM_ORDER, StreamToken, TokenError

# Stream positions are Postgres bigints.
POSITIONS = st.integers(min_value=0, max_value=2**63 - 1)


def test_encode_format() -> None:
    assert StreamToken(events=1234).encode() == "s1234"
    assert StreamToken().encode() == "s0"
    assert str(StreamToken(events=7)) == "s7"


def test_decode_simple() -> None:
    assert StreamToken.decode("s1234") == StreamToken(events=1234)
    assert StreamToken.decode("s0") == StreamToken(events=0)
    # Leading zeros are digits like any other.
    assert StreamToken.decode("s007") == StreamToken(events=7)


def test_stream_order_matches_fields() -> None:
    # Every field of the token must be named in STREAM_ORDER, or encode drops it.
    fields = [a.name for a in StreamToken.__attrs_attrs__]
    assert list(STREAM_ORDER) == fields


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "s",
        "1234",
        "S1234",
        "t1234",
        "s-1",
        "s+1",
        "s 1",
        " s1",
        "s1 ",
        "s1_",
        "s_1",
        "s1__2",
        "s1.5",
        "s0x10",
        "s1e3",
        "s" + "9" * 20,
        "s1\n",  # a trailing newline is not part of a token
        "s1\r\n",
        "s\u0663",  # ARABIC-INDIC DIGIT THREE is not an ASCII digit
        "s\uff11",  # FULLWIDTH DIGIT ONE
        "s1\x00",
    ],
)
def test_decode_rejects_malformed(raw: str) -> None:
    with pytest.raises(TokenError):
        StreamToken.decode(raw)


def test_decode_rejects_more_fields_than_known() -> None:
    extra = "_".join(["1"] * (len(STREAM_ORDER) + 1))
    with pytest.raises(TokenError, match="more fields"):
        StreamToken.decode("s" + extra)


def test_token_error_is_value_error() -> None:
    # Callers that catch ValueError keep working.
    assert issubclass(TokenError, ValueError)


def test_error_message_truncates_long_input() -> None:
    with pytest.raises(TokenError) as exc:
        StreamToken.decode("x" * 10_000)
    assert len(str(exc.value)) < 200


def test_is_after() -> None:
    a, b = StreamToken(events=5), StreamToken(events=6)
    assert b.is_after(a)
    assert not a.is_after(b)
    assert not a.is_after(StreamToken(events=5))


@settings(deadline=None)  # timing-independent; CI machines can be slow
@given(POSITIONS)
def test_round_trip(events: int) -> None:
    token = StreamToken(events=events)
    encoded = token.encode()
    assert encoded.isascii()
    assert StreamToken.decode(encoded) == token
    # And the encoding is canonical: decoding then encoding gives back the same string.
    assert StreamToken.decode(encoded).encode() == encoded


@settings(deadline=None)  # timing-independent; CI machines can be slow
@given(POSITIONS, POSITIONS)
def test_is_after_matches_integer_order(x: int, y: int) -> None:
    assert StreamToken(events=x).is_after(StreamToken(events=y)) == (x > y)


@settings(deadline=None)  # timing-independent; CI machines can be slow
@given(st.text(max_size=64))
def test_decode_arbitrary_text_only_raises_token_error(raw: str) -> None:
    try:
        token = StreamToken.decode(raw)
    except TokenError:
        return
    # Anything accepted is canonical up to leading zeros, and ASCII only.
    assert raw.isascii()
    assert StreamToken.decode(token.encode()) == token


@settings(deadline=None)  # timing-independent; CI machines can be slow
@given(st.from_regex(r"\As[0-9]{1,19}\Z"))
def test_decode_accepts_every_well_formed_token(raw: str) -> None:
    assert StreamToken.decode(raw).events == int(raw[1:])
