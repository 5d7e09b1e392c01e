"""Power-level value parsing per room version, including property-based checks."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from homeserver.events.auth import AuthError, check_auth_rules, get_user_power_level
from homeserver.events.event import Event, StateKey
from homeserver.events.power_levels import parse_level
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion

ALL = [str(n) for n in range(1, 13)]
STRINGY = [str(n) for n in range(1, 10)]
FLOATY = [str(n) for n in range(1, 6)]

version_st = st.sampled_from(ALL).map(lambda v: KNOWN_ROOM_VERSIONS[v])
whitespace_st = st.text(alphabet=" \t\n\r\f\v", max_size=3)


@st.composite
def stringy_ints(draw: st.DrawFn) -> tuple[str, int]:
    """A string form of an integer allowed by the stringy power-levels fragment."""
    n = draw(st.integers(min_value=-(10**20), max_value=10**20))
    sign = "-" if n < 0 else draw(st.sampled_from(["", "+"]))
    zeros = "0" * draw(st.integers(min_value=0, max_value=3))
    text = draw(whitespace_st) + sign + zeros + str(abs(n)) + draw(whitespace_st)
    return text, n


@given(version_st, stringy_ints())
def test_stringy_integers_parse_until_v10(rv: RoomVersion, case: tuple[str, int]) -> None:
    text, n = case
    expected = None if rv.integer_power_levels else n
    assert parse_level(text, rv) == expected


@given(version_st, st.integers())
def test_integers_parse_in_every_version(rv: RoomVersion, n: int) -> None:
    assert parse_level(n, rv) == n


@given(version_st, st.floats(allow_nan=True, allow_infinity=True))
def test_floats_truncate_only_in_v1_to_v5(rv: RoomVersion, value: float) -> None:
    got = parse_level(value, rv)
    if rv.identifier in FLOATY and math.isfinite(value):
        assert got == math.trunc(value)
        assert isinstance(got, int)
    else:
        assert got is None


@given(
    version_st,
    stringy_ints(),
    st.sampled_from([".", ".0", "e3", "_0", "x", "--", "+-"]),
)
def test_non_integer_strings_never_parse(rv: RoomVersion, case: tuple[str, int], junk: str) -> None:
    text, _ = case
    stripped = text.rstrip()
    assert parse_level(stripped + junk, rv) is None


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        None,
        "",
        "  ",
        "+",
        "1 2",
        "1_000",  # int() would accept this
        "\u0661\u0662",  # Arabic-Indic digits: int() would accept these
        "\u00a010",  # non-ASCII whitespace
        "0x10",
        "5.114698E4",
        [],
        {},
    ],
)
def test_invalid_values(version: str, value: Any) -> None:
    assert parse_level(value, KNOWN_ROOM_VERSIONS[version]) is None


@pytest.mark.parametrize("version", ALL)
def test_spec_examples(version: str) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    stringy = version in STRINGY
    for text, n in [("100", 100), ("000100", 100), ("+100", 100), ("-100", -100), (" 00100 ", 100)]:
        assert parse_level(text, rv) == (n if stringy else None)
    floaty = version in FLOATY
    assert parse_level(5.114698e4, rv) == (51146 if floaty else None)
    assert parse_level(50.57, rv) == (50 if floaty else None)
    assert parse_level(-0.5, rv) == (0 if floaty else None)


# -- properties through the auth rules ---------------------------------------------------


def _event(rv: RoomVersion, n: int, type: str, sender: str, content: Any, sk: str | None) -> Event:
    pdu: dict[str, Any] = {
        "type": type,
        "sender": sender,
        "content": content,
        # v12: the room ID is the create event's ID ("$e1:a.test") with sigil "!".
        "room_id": "!e1:a.test",
        "prev_events": [] if type == "m.room.create" else ["$p"],
        "auth_events": [],
        "depth": n,
    }
    if sk is not None:
        pdu["state_key"] = sk
    if type == "m.room.create" and rv.room_id_is_create_event_id:
        del pdu["room_id"]
    return Event(pdu, rv, f"$e{n}:a.test")


def _state(rv: RoomVersion, users: dict[str, Any]) -> dict[StateKey, Event]:
    create_content = {} if rv.implicit_room_creator else {"creator": "@c:a.test"}
    events = [
        _event(rv, 1, "m.room.create", "@c:a.test", create_content, ""),
        _event(rv, 2, "m.room.member", "@u:a.test", {"membership": "join"}, "@u:a.test"),
        _event(rv, 3, "m.room.power_levels", "@c:a.test", {"users": users}, ""),
    ]
    return {e.key: e for e in events}


@given(st.sampled_from(STRINGY).map(lambda v: KNOWN_ROOM_VERSIONS[v]), stringy_ints())
def test_stringy_user_levels_are_honoured(rv: RoomVersion, case: tuple[str, int]) -> None:
    text, n = case
    state = _state(rv, {"@u:a.test": text})
    assert get_user_power_level("@u:a.test", state) == n


@given(
    version_st,
    st.integers(min_value=-100, max_value=200),
    st.integers(min_value=-100, max_value=200),
)
def test_users_may_grant_up_to_their_own_level(rv: RoomVersion, own: int, granted: int) -> None:
    state = _state(rv, {"@u:a.test": own})
    event = _event(
        rv,
        4,
        "m.room.power_levels",
        "@u:a.test",
        {"users": {"@u:a.test": own, "@v:a.test": granted}},
        "",
    )
    # Sending power levels needs state_default (50) in the first place.
    expected = own >= 50 and granted <= own
    try:
        check_auth_rules(event, state)
    except AuthError:
        assert not expected
    else:
        assert expected
