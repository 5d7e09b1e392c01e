"""Filters (pure): parsing a filter's shape, and what each field lets through."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homeserver.sync.filters import (
    EventFilter,
    FilterError,
    RoomEventFilter,
    SyncFilter,
    only_fields,
    parse_room_event_filter,
    parse_sync_filter,
    split_field_path,
    type_matches,
)

TYPES = st.text(alphabet="abm.*_", min_size=0, max_size=8)
NAMES = st.text(alphabet="abm._", min_size=0, max_size=8)


def test_empty_filter_allows_everything() -> None:
    f = parse_sync_filter({})
    assert f == SyncFilter()
    assert f.room.timeline.allows_event("m.room.message", "@a:x", "!r:x", {"body": "hi"})
    assert f.presence.allows("m.presence", "@a:x")
    assert f.room.allows_room("!r:x")
    assert not f.room.include_leave
    assert f.event_format == "client" and f.event_fields is None


def test_full_filter_parses_every_field() -> None:
    raw: dict[str, Any] = {
        "event_fields": ["type", "content.body"],
        "event_format": "federation",
        "presence": {"types": ["m.presence"], "not_senders": ["@spam:x"], "limit": 5},
        "account_data": {"not_types": ["m.secret*"]},
        "room": {
            "rooms": ["!a:x", "!b:x"],
            "not_rooms": ["!b:x"],
            "include_leave": True,
            "timeline": {
                "limit": 20,
                "types": ["m.room.*"],
                "not_types": ["m.room.member"],
                "senders": ["@a:x"],
                "not_senders": ["@b:x"],
                "rooms": ["!a:x"],
                "not_rooms": ["!c:x"],
                "contains_url": True,
                "unread_thread_notifications": True,
            },
            "state": {"lazy_load_members": True, "include_redundant_members": True},
            "ephemeral": {"types": ["m.typing"]},
            "account_data": {"types": ["m.tag"]},
        },
    }
    f = parse_sync_filter(raw)
    assert f.event_fields == ("type", "content.body")
    assert f.event_format == "federation"
    assert f.presence.limit == 5 and f.presence.not_senders == frozenset({"@spam:x"})
    assert f.room.rooms == frozenset({"!a:x", "!b:x"})
    assert f.room.allows_room("!a:x") and not f.room.allows_room("!b:x")  # not_rooms wins
    assert f.room.include_leave
    t = f.room.timeline
    assert t.limit == 20 and t.contains_url is True and t.unread_thread_notifications
    assert f.lazy_load_members and f.include_redundant_members
    assert f.room.ephemeral.types == ("m.typing",)
    assert not f.account_data.allows("m.secret_storage.key")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ([], ""),
        ("x", ""),
        ({"room": []}, "room"),
        ({"room": {"timeline": "x"}}, "room.timeline"),
        ({"room": {"timeline": {"limit": "10"}}}, "room.timeline.limit"),
        ({"room": {"timeline": {"limit": True}}}, "room.timeline.limit"),
        ({"room": {"timeline": {"limit": 1.5}}}, "room.timeline.limit"),
        ({"room": {"timeline": {"limit": -1}}}, "room.timeline.limit"),
        ({"room": {"state": {"types": "m.room.name"}}}, "room.state.types"),
        ({"room": {"state": {"types": [1]}}}, "room.state.types[0]"),
        ({"room": {"state": {"lazy_load_members": "true"}}}, "room.state.lazy_load_members"),
        ({"room": {"include_leave": 1}}, "room.include_leave"),
        ({"room": {"rooms": "!a:x"}}, "room.rooms"),
        ({"room": {"timeline": {"contains_url": "yes"}}}, "room.timeline.contains_url"),
        ({"presence": {"senders": [None]}}, "presence.senders[0]"),
        ({"account_data": 5}, "account_data"),
        ({"event_format": "xml"}, "event_format"),
        ({"event_fields": "type"}, "event_fields"),
    ],
)
def test_bad_shapes_name_the_field(raw: Any, field: str) -> None:
    with pytest.raises(FilterError) as exc:
        parse_sync_filter(raw)
    assert exc.value.field == field


def test_unknown_keys_are_ignored() -> None:
    assert parse_sync_filter({"org.example": 1, "room": {"future": []}}) == SyncFilter()


def test_null_values_mean_absent() -> None:
    f = parse_sync_filter(
        {"room": {"timeline": {"limit": None, "types": None}}, "event_format": None}
    )
    assert f == SyncFilter()


def test_wildcards() -> None:
    assert type_matches("m.room.*", "m.room.message")
    assert type_matches("m.room.*", "m.room.")
    assert not type_matches("m.room.*", "m.roomx")
    assert type_matches("*", "")
    assert type_matches("m.*.member", "m.room.member")
    assert not type_matches("m.room.message", "m.room.messages")
    # Regex metacharacters are literal.
    assert type_matches("a.b", "a.b") and not type_matches("a.b", "axb")
    assert type_matches("(x)+", "(x)+") and not type_matches("(x)+", "xx")


def test_not_lists_win_over_allow_lists() -> None:
    f = EventFilter(
        types=("m.*",),
        not_types=("m.room.member",),
        senders=frozenset({"@a:x", "@b:x"}),
        not_senders=frozenset({"@b:x"}),
    )
    assert f.allows("m.room.message", "@a:x")
    assert not f.allows("m.room.member", "@a:x")
    assert not f.allows("m.room.message", "@b:x")
    assert not f.allows("m.room.message", "@c:x")
    assert not f.allows("x.custom", "@a:x")


def test_events_without_sender_pass_sender_rules() -> None:
    f = EventFilter(senders=frozenset({"@a:x"}))
    assert f.allows("m.typing", None)


def test_contains_url() -> None:
    with_url = RoomEventFilter(contains_url=True)
    without_url = RoomEventFilter(contains_url=False)
    image = {"url": "mxc://x/y", "msgtype": "m.image"}
    text = {"body": "hi"}
    assert with_url.allows_event("m.room.message", "@a:x", "!r:x", image)
    assert not with_url.allows_event("m.room.message", "@a:x", "!r:x", text)
    assert without_url.allows_event("m.room.message", "@a:x", "!r:x", text)
    assert not without_url.allows_event("m.room.message", "@a:x", "!r:x", image)
    # A url that is not a string is no url.
    assert not with_url.allows_event("m.room.message", "@a:x", "!r:x", {"url": 5})


def test_rooms_of_room_event_filter() -> None:
    f = parse_room_event_filter({"rooms": ["!a:x"], "not_rooms": ["!a:x"]})
    assert not f.allows_room("!a:x")
    assert not parse_room_event_filter({"rooms": ["!a:x"]}).allows_room("!b:x")
    assert parse_room_event_filter({"not_rooms": ["!a:x"]}).allows_room("!b:x")


def test_filter_json_applies_limit_after_matching() -> None:
    f = EventFilter(types=("keep",), limit=2)
    events = [{"type": t} for t in ("drop", "keep", "drop", "keep", "keep")]
    assert f.filter_json(events) == [{"type": "keep"}, {"type": "keep"}]


def test_allows_nothing() -> None:
    assert EventFilter(types=()).allows_nothing()
    assert EventFilter(limit=0).allows_nothing()
    assert RoomEventFilter(rooms=frozenset()).allows_nothing()
    assert not EventFilter().allows_nothing()


def test_split_field_path_escapes() -> None:
    assert split_field_path("content.body") == ("content", "body")
    assert split_field_path(r"content.m\.relates_to") == ("content", "m.relates_to")
    assert split_field_path(r"content.m\\foo") == ("content", "m\\foo")
    assert split_field_path(r"content.\x") == ("content", "\\x")
    assert split_field_path("type") == ("type",)


def test_only_fields() -> None:
    event = {
        "type": "m.room.message",
        "content": {"body": "hi", "m.relates_to": {"x": 1}},
        "sender": "@a:x",
    }
    assert only_fields(event, ["type", "content.body"]) == {
        "type": "m.room.message",
        "content": {"body": "hi"},
    }
    assert only_fields(event, [r"content.m\.relates_to.x"]) == {
        "content": {"m.relates_to": {"x": 1}}
    }
    assert only_fields(event, ["missing", "content.nope"]) == {}
    assert only_fields(event, ["content", "content.body"])["content"] == event["content"]


# ---------------------------------------------------------------------- properties


def _reference_match(pattern: str, value: str) -> bool:
    """A second, independent glob: fnmatch-free translation via regex escaping per char."""
    regex = "".join(".*" if ch == "*" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


@settings(deadline=None)
@given(TYPES, NAMES)
def test_wildcard_matches_reference(pattern: str, value: str) -> None:
    assert type_matches(pattern, value) == _reference_match(pattern, value)


@settings(deadline=None)
@given(NAMES)
def test_literal_patterns_match_only_themselves(value: str) -> None:
    assert type_matches(value, value)
    assert not type_matches(value, value + "x")


@settings(deadline=None)
@given(
    st.one_of(st.none(), st.lists(TYPES, max_size=3)),
    st.lists(TYPES, max_size=3),
    st.one_of(st.none(), st.lists(NAMES, max_size=3)),
    st.lists(NAMES, max_size=3),
    NAMES,
    NAMES,
)
def test_allows_is_the_conjunction_of_its_rules(
    types: list[str] | None,
    not_types: list[str],
    senders: list[str] | None,
    not_senders: list[str],
    event_type: str,
    sender: str,
) -> None:
    f = parse_sync_filter(
        {
            "presence": {
                "types": types,
                "not_types": not_types,
                "senders": senders,
                "not_senders": not_senders,
            }
        }
    ).presence
    expected = (
        not any(_reference_match(p, event_type) for p in not_types)
        and (types is None or any(_reference_match(p, event_type) for p in types))
        and sender not in not_senders
        and (senders is None or sender in senders)
    )
    assert f.allows(event_type, sender) == expected


@settings(deadline=None)
@given(
    st.lists(st.fixed_dictionaries({"type": TYPES, "sender": NAMES}), max_size=10),
    st.one_of(st.none(), st.integers(min_value=0, max_value=12)),
    st.lists(TYPES, max_size=2),
)
def test_filter_json_is_an_ordered_subsequence(
    events: list[dict[str, str]], limit: int | None, not_types: list[str]
) -> None:
    f = EventFilter(limit=limit, not_types=tuple(not_types))
    out = f.filter_json(events)
    allowed = [e for e in events if f.allows(e["type"], e["sender"])]
    assert out == (allowed if limit is None else allowed[:limit])


JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))
JSON = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["room", "presence", "account_data", "event_fields", "event_format", "x"]),
        JSON,
    )
)
def test_parsing_arbitrary_json_raises_only_filter_errors(raw: dict[str, Any]) -> None:
    try:
        parse_sync_filter(raw)
    except FilterError:
        pass
