"""StreamToken: the /sync and /messages pagination token codec."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homeserver.sync.tokens import MAX_POSITION, STREAM_ORDER, StreamToken, TokenError

# Stream positions are Postgres bigints.
POSITIONS = st.integers(min_value=0, max_value=2**63 - 1)
TOKENS = st.builds(StreamToken, **{name: POSITIONS | st.just(0) for name in STREAM_ORDER})


def test_encode_format() -> None:
    assert StreamToken(events=1234).encode() == "s1234"
    assert StreamToken().encode() == "s0"
    assert str(StreamToken(events=7)) == "s7"


def test_decode_simple() -> None:
    assert StreamToken.decode("s1234") == StreamToken(events=1234)
    assert StreamToken.decode("s0") == StreamToken(events=0)
    # Leading zeros are digits like any other.
    assert StreamToken.decode("s007") == StreamToken(events=7)


def test_fields_follow_stream_order() -> None:
    values = list(range(1, len(STREAM_ORDER) + 1))
    token = StreamToken(**dict(zip(STREAM_ORDER, values, strict=True)))
    raw = "s" + "_".join(map(str, values))
    assert token.encode() == raw
    assert StreamToken.decode(raw) == token
    assert token.positions() == dict(zip(STREAM_ORDER, values, strict=True))


def test_trailing_zero_fields_are_left_out() -> None:
    assert StreamToken(events=5).encode() == "s5"
    assert StreamToken(events=5, typing=0, receipts=2).encode() == "s5_0_2"
    assert StreamToken(events=0, typing=3).encode() == "s0_3"
    # And an older, shorter token reads the missing fields as 0.
    assert StreamToken.decode("s5_0_2") == StreamToken.decode("s5_0_2_0_0")


def test_get_and_with_positions() -> None:
    token = StreamToken(events=4).with_positions(typing=9)
    assert token == StreamToken(events=4, typing=9)
    assert token.get("typing") == 9
    assert token.get("events") == 4
    assert token.get("no_such_stream") == 0
    assert token.get("encode") == 0  # not a stream, even though it is an attribute


def test_position_range() -> None:
    assert StreamToken.decode(f"s{MAX_POSITION}").events == MAX_POSITION
    with pytest.raises(TokenError):
        StreamToken.decode(f"s{MAX_POSITION + 1}")
    with pytest.raises(TokenError):
        StreamToken.decode(f"s1_{MAX_POSITION + 1}")


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
    # Any one stream ahead is enough.
    assert StreamToken(events=5, device_lists=1).is_after(a)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # busy CI machines
@given(POSITIONS)
def test_round_trip(events: int) -> None:
    token = StreamToken(events=events)
    encoded = token.encode()
    assert encoded == f"s{events}"
    assert StreamToken.decode(encoded) == token


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # busy CI machines
@given(TOKENS)
def test_round_trip_all_streams(token: StreamToken) -> None:
    encoded = token.encode()
    assert encoded.isascii()
    assert StreamToken.decode(encoded) == token
    # The encoding is canonical: decoding then encoding gives back the same string.
    assert StreamToken.decode(encoded).encode() == encoded
    # Appending zero fields (up to the number of streams) names the same token.
    fields = encoded[1:].split("_")
    padded = "s" + "_".join(fields + ["0"] * (len(STREAM_ORDER) - len(fields)))
    assert StreamToken.decode(padded) == token


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # busy CI machines
@given(TOKENS, TOKENS)
def test_is_after_matches_fieldwise_order(x: StreamToken, y: StreamToken) -> None:
    px, py = x.positions(), y.positions()
    assert x.is_after(y) == any(px[n] > py[n] for n in STREAM_ORDER)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # busy CI machines
@given(st.text(max_size=64))
def test_decode_arbitrary_text_only_raises_token_error(raw: str) -> None:
    try:
        token = StreamToken.decode(raw)
    except TokenError:
        return
    # Anything accepted is canonical up to leading zeros, and ASCII only.
    assert raw.isascii()
    assert StreamToken.decode(token.encode()) == token


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # busy CI machines
@given(st.from_regex(r"\As[0-9]{1,18}(_[0-9]{1,18}){0,6}\Z"))
def test_decode_accepts_every_well_formed_token(raw: str) -> None:
    values = [int(p) for p in raw[1:].split("_")]
    assert list(StreamToken.decode(raw).positions().values())[: len(values)] == values
