"""Stream tokens with every stream: short encodings, old tokens, per-stream access."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from homeserver.sync.tokens import STREAM_ORDER, StreamToken

POSITIONS = st.integers(min_value=0, max_value=2**63 - 1)


def test_stream_order() -> None:
    assert STREAM_ORDER == (
        "events", "typing", "receipts", "presence", "account_data", "to_device", "device_lists",
    )  # fmt: skip


def test_trailing_zeros_are_left_out() -> None:
    assert StreamToken(events=5, receipts=2).encode() == "s5_0_2"
    assert StreamToken(device_lists=1).encode() == "s0_0_0_0_0_0_1"
    assert StreamToken().encode() == "s0"


def test_old_tokens_read_missing_streams_as_zero() -> None:
    assert StreamToken.decode("s17") == StreamToken(events=17)
    assert StreamToken.decode("s17_3").typing == 3
    assert StreamToken.decode("s17_3").get("device_lists") == 0
    assert StreamToken().get("no_such_stream") == 0


def test_positions_and_evolve() -> None:
    token = StreamToken(events=1, presence=4)
    assert token.positions()["presence"] == 4
    assert token.with_positions(presence=9).presence == 9


@settings(deadline=None)
@given(st.lists(POSITIONS, min_size=len(STREAM_ORDER), max_size=len(STREAM_ORDER)))
def test_round_trip_every_stream(values: list[int]) -> None:
    token = StreamToken(**dict(zip(STREAM_ORDER, values, strict=True)))
    encoded = token.encode()
    assert StreamToken.decode(encoded) == token
    assert not encoded.endswith("_0")
