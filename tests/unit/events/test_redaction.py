"""The redaction algorithms of each room version."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from homeserver.events.redaction import redact_client_event, redact_content, redact_pdu
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS

ALL_VERSIONS = [str(n) for n in range(1, 13)]

BASE: dict[str, Any] = {
    "auth_events": ["$a"],
    "depth": 4,
    "event_id": "$e:x",
    "hashes": {"sha256": "h"},
    "membership": "join",
    "origin": "x",
    "origin_server_ts": 1,
    "prev_events": ["$p"],
    "prev_state": [],
    "room_id": "!r:x",
    "sender": "@s:x",
    "signatures": {"x": {"ed25519:1": "sig"}},
    "state_key": "",
    "unsigned": {"age": 1},
    "redacts": "$t",
    "extra_top_level": True,
}

V1_TOP = {
    "auth_events",
    "content",
    "depth",
    "event_id",
    "hashes",
    "membership",
    "origin",
    "origin_server_ts",
    "prev_events",
    "prev_state",
    "room_id",
    "sender",
    "signatures",
    "state_key",
    "type",
}
V11_TOP = V1_TOP - {"origin", "membership", "prev_state"}


def _pdu(event_type: str, content: dict[str, Any]) -> dict[str, Any]:
    return dict(BASE, type=event_type, content=content)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_top_level_keys(version: str) -> None:
    redacted = redact_pdu(_pdu("m.room.message", {"body": "x"}), version)
    expected = V11_TOP if int(version) >= 11 else V1_TOP
    assert set(redacted) == expected
    assert redacted["content"] == {}
    # Values of kept keys are unchanged.
    for key in expected - {"content", "type"}:
        assert redacted[key] == BASE[key]


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_top_level_redacts_is_never_kept(version: str) -> None:
    redacted = redact_pdu(_pdu("m.room.redaction", {"redacts": "$t"}), version)
    assert "redacts" not in redacted
    if int(version) >= 11:
        assert redacted["content"] == {"redacts": "$t"}
    else:
        assert redacted["content"] == {}


MEMBER_CONTENT = {
    "membership": "join",
    "displayname": "Alice",
    "avatar_url": "mxc://x/y",
    "join_authorised_via_users_server": "@admin:x",
    "third_party_invite": {"display_name": "a...@b", "signed": {"token": "t", "mxid": "@s:x"}},
}
POWER_LEVELS_CONTENT = {
    "ban": 50,
    "events": {"m.room.name": 50},
    "events_default": 0,
    "invite": 0,
    "kick": 50,
    "notifications": {"room": 50},
    "redact": 50,
    "state_default": 50,
    "users": {"@s:x": 100},
    "users_default": 0,
}
PL_V1_KEPT = {k: v for k, v in POWER_LEVELS_CONTENT.items() if k not in ("invite", "notifications")}

# (event type, content, {algorithm-version: expected content}); the versions are the
# first version of each algorithm, and each expectation applies to all later versions
# until the next entry.
CASES: list[tuple[str, dict[str, Any], dict[int, dict[str, Any]]]] = [
    (
        "m.room.member",
        MEMBER_CONTENT,
        {
            1: {"membership": "join"},
            9: {"membership": "join", "join_authorised_via_users_server": "@admin:x"},
            11: {
                "membership": "join",
                "join_authorised_via_users_server": "@admin:x",
                "third_party_invite": {"signed": {"token": "t", "mxid": "@s:x"}},
            },
        },
    ),
    (
        "m.room.create",
        {"creator": "@s:x", "room_version": "1", "m.federate": False, "type": "m.space"},
        {
            1: {"creator": "@s:x"},
            11: {"creator": "@s:x", "room_version": "1", "m.federate": False, "type": "m.space"},
        },
    ),
    (
        "m.room.join_rules",
        {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}], "x": 1},
        {
            1: {"join_rule": "restricted"},
            9: {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}]},
        },
    ),
    (
        "m.room.power_levels",
        POWER_LEVELS_CONTENT,
        {1: PL_V1_KEPT, 11: dict(PL_V1_KEPT, invite=0)},
    ),
    (
        "m.room.aliases",
        {"aliases": ["#a:x"], "other": 1},
        {1: {"aliases": ["#a:x"]}, 6: {}},
    ),
    (
        "m.room.history_visibility",
        {"history_visibility": "shared", "other": 1},
        {1: {"history_visibility": "shared"}},
    ),
    (
        "m.room.redaction",
        {"redacts": "$t", "reason": "spam"},
        {1: {}, 11: {"redacts": "$t"}},
    ),
    (
        "m.room.message",
        {"body": "x", "msgtype": "m.text", "membership": "join"},
        {1: {}},
    ),
    (
        "m.room.topic",
        {"topic": "t"},
        {1: {}},
    ),
]


def _expected_for(table: dict[int, dict[str, Any]], version: int) -> dict[str, Any]:
    return table[max(v for v in table if v <= version)]


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize(("event_type", "content", "table"), CASES, ids=[c[0] for c in CASES])
def test_content_per_type_per_version(
    version: str, event_type: str, content: dict[str, Any], table: dict[int, dict[str, Any]]
) -> None:
    original = copy.deepcopy(content)
    redacted = redact_pdu(_pdu(event_type, content), version)
    assert redacted["content"] == _expected_for(table, int(version))
    assert content == original  # input untouched


def test_v11_third_party_invite_without_signed_is_dropped() -> None:
    content = {"membership": "invite", "third_party_invite": {"display_name": "x"}}
    assert redact_content("m.room.member", content, "11") == {"membership": "invite"}
    content2 = {"membership": "invite", "third_party_invite": "garbage"}
    assert redact_content("m.room.member", content2, "12") == {"membership": "invite"}


def test_redacted_output_does_not_alias_input() -> None:
    pdu = _pdu("m.room.create", {"nested": {"a": 1}})
    redacted = redact_pdu(pdu, "11")
    redacted["content"]["nested"]["a"] = 2
    redacted["signatures"]["x"]["ed25519:1"] = "changed"
    assert pdu["content"]["nested"] == {"a": 1}
    assert pdu["signatures"]["x"]["ed25519:1"] == "sig"


def test_missing_or_bad_content() -> None:
    pdu = {k: v for k, v in _pdu("m.room.member", {}).items() if k != "content"}
    assert redact_pdu(pdu, "12")["content"] == {}
    assert redact_pdu(dict(pdu, content="nope"), "12")["content"] == {}


def test_unknown_version_raises() -> None:
    with pytest.raises(ValueError):
        redact_pdu(_pdu("m.room.message", {}), "13")


def test_accepts_room_version_object() -> None:
    pdu = _pdu("m.room.create", {"creator": "@s:x", "x": 1})
    assert redact_pdu(pdu, KNOWN_ROOM_VERSIONS["11"]) == redact_pdu(pdu, "11")


# --- client format -------------------------------------------------------------------


CLIENT_EVENT: dict[str, Any] = {
    "content": {"membership": "join", "displayname": "Alice"},
    "event_id": "$e",
    "origin_server_ts": 5,
    "room_id": "!r:x",
    "sender": "@s:x",
    "state_key": "@s:x",
    "type": "m.room.member",
    "unsigned": {"age": 3, "prev_content": {"membership": "invite"}},
}


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_redact_client_event(version: str) -> None:
    redacted = redact_client_event(CLIENT_EVENT, version)
    assert redacted == {
        "content": {"membership": "join"},
        "event_id": "$e",
        "origin_server_ts": 5,
        "room_id": "!r:x",
        "sender": "@s:x",
        "state_key": "@s:x",
        "type": "m.room.member",
    }


def test_redact_client_event_drops_federation_keys() -> None:
    event = dict(CLIENT_EVENT, depth=3, hashes={}, signatures={}, origin="x", redacts="$t")
    assert set(redact_client_event(event, "5")) == {
        "content",
        "event_id",
        "origin_server_ts",
        "room_id",
        "sender",
        "state_key",
        "type",
    }


def test_redact_client_event_v11_create_keeps_content() -> None:
    event = dict(CLIENT_EVENT, type="m.room.create", content={"room_version": "11", "a": 1})
    assert redact_client_event(event, "11")["content"] == {"room_version": "11", "a": 1}
    assert redact_client_event(event, "10")["content"] == {}


# --- properties ----------------------------------------------------------------------

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-100, 100) | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)
_interesting_keys = st.sampled_from(
    [
        "membership",
        "creator",
        "join_rule",
        "allow",
        "aliases",
        "history_visibility",
        "redacts",
        "ban",
        "invite",
        "notifications",
        "users",
        "join_authorised_via_users_server",
        "third_party_invite",
        "body",
    ]
)
_content = st.dictionaries(_interesting_keys | st.text(max_size=5), _values, max_size=6)
_types = st.sampled_from(
    [
        "m.room.member",
        "m.room.create",
        "m.room.join_rules",
        "m.room.power_levels",
        "m.room.aliases",
        "m.room.history_visibility",
        "m.room.redaction",
        "m.room.message",
    ]
)
_top = st.dictionaries(
    st.sampled_from(sorted(V1_TOP | {"unsigned", "redacts", "foo"})), _values, max_size=10
)


@given(version=st.sampled_from(ALL_VERSIONS), event_type=_types, content=_content, top=_top)
def test_redaction_is_idempotent(
    version: str, event_type: str, content: dict[str, Any], top: dict[str, Any]
) -> None:
    pdu = dict(top, type=event_type, content=content)
    once = redact_pdu(pdu, version)
    assert redact_pdu(once, version) == once
    client_once = redact_client_event(pdu, version)
    assert redact_client_event(client_once, version) == client_once


@given(version=st.sampled_from(ALL_VERSIONS), event_type=_types, content=_content, top=_top)
def test_redaction_only_removes(
    version: str, event_type: str, content: dict[str, Any], top: dict[str, Any]
) -> None:
    pdu = dict(top, type=event_type, content=content)
    redacted = redact_pdu(pdu, version)
    assert set(redacted) - {"content"} <= set(pdu)
    for key, value in redacted["content"].items():
        if key == "third_party_invite" and event_type == "m.room.member":
            # Member events keep only the signed part of a third-party invite.
            assert value == {"signed": content[key]["signed"]}
        else:
            assert content[key] == value
