"""serialize_event (pure): the client format, and what EventExtras adds to it.

Also the pure helpers of the relations store: which `m.relates_to` counts as a relation,
and which edits qualify on their own.
"""

from __future__ import annotations

from typing import Any

import pytest
from signedjson.key import generate_signing_key

from homeserver.events.builder import build_event
from homeserver.events.client_format import EventExtras, serialize_event
from homeserver.events.event import Event
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from storage.stores.events import PersistedEvent
from storage.stores.relations import Relation, is_valid_replacement_alone, parse_relation

KEY = generate_signing_key("k")
ROOM = "!room:hs.test"
ALICE = "@alice:hs.test"
TS = 1_700_000_000_000


def make(
    event_type: str,
    content: dict[str, Any],
    *,
    state_key: str | None = None,
    version: str = "12",
    txn: tuple[str, str, str] | None = None,
    sender: str = ALICE,
    redacts: str | None = None,
) -> PersistedEvent:
    event: Event = build_event(
        KNOWN_ROOM_VERSIONS[version],
        type=event_type,
        sender=sender,
        content=content,
        server_name="hs.test",
        signing_key=KEY,
        origin_server_ts=TS,
        depth=5,
        prev_event_ids=[],
        auth_event_ids=[],
        room_id=ROOM,
        state_key=state_key,
        redacts=redacts,
    )
    return PersistedEvent(event, 7, txn)


def test_plain_event_shape_and_age() -> None:
    pe = make("m.room.message", {"msgtype": "m.text", "body": "hi"})
    out = serialize_event(pe, TS + 1234)
    assert out == {
        "content": {"msgtype": "m.text", "body": "hi"},
        "origin_server_ts": TS,
        "room_id": ROOM,
        "sender": ALICE,
        "type": "m.room.message",
        "event_id": pe.event.event_id,
        "unsigned": {"age": 1234},
    }
    # A clock behind the event never gives a negative age.
    assert serialize_event(pe, TS - 5)["unsigned"]["age"] == 0


def test_transaction_id_only_for_the_sending_device() -> None:
    pe = make("m.room.message", {"body": "x"}, txn=(ALICE, "DEV", "t1"))
    assert serialize_event(pe, TS, for_device=(ALICE, "DEV"))["unsigned"]["transaction_id"] == "t1"
    assert "transaction_id" not in serialize_event(pe, TS, for_device=(ALICE, "OTHER"))["unsigned"]
    assert "transaction_id" not in serialize_event(pe, TS)["unsigned"]


def test_member_event_without_extras_has_no_requester_membership() -> None:
    # unsigned.membership is the *requesting* user's membership, not the event's own.
    pe = make("m.room.member", {"membership": "join"}, state_key=ALICE)
    assert "membership" not in serialize_event(pe, TS)["unsigned"]
    extras = EventExtras(membership="leave")
    assert serialize_event(pe, TS, extras=extras)["unsigned"]["membership"] == "leave"


@pytest.mark.parametrize("version", ["1", "6", "9", "10", "11", "12"])
def test_redacted_event_keeps_only_protected_content(version: str) -> None:
    pe = make(
        "m.room.member",
        {"membership": "join", "displayname": "Alice", "avatar_url": "mxc://x/y"},
        state_key=ALICE,
        version=version,
    )
    because = {"event_id": "$r", "type": "m.room.redaction", "content": {}}
    out = serialize_event(pe, TS, extras=EventExtras(redacted_because=because))
    assert out["content"] == {"membership": "join"}
    assert out["state_key"] == ALICE and out["sender"] == ALICE
    assert out["unsigned"]["redacted_because"] == because


def test_redacted_message_loses_content_but_keeps_bundles_given() -> None:
    pe = make("m.room.message", {"msgtype": "m.text", "body": "secret"})
    bundle = {"m.thread": {"count": 1}}
    out = serialize_event(
        pe, TS, extras=EventExtras(redacted_because={"event_id": "$r"}, relations=bundle)
    )
    assert out["content"] == {}
    assert out["unsigned"]["m.relations"] == bundle


def test_redaction_event_redacted_under_v11_rules_keeps_redacts() -> None:
    pe = make("m.room.redaction", {"redacts": "$t", "reason": "spam"}, version="11")
    out = serialize_event(pe, TS, extras=EventExtras(redacted_because={"event_id": "$r2"}))
    assert out["content"] == {"redacts": "$t"}


def test_replaced_state_gives_prev_content_sender_and_id() -> None:
    old = make("m.room.topic", {"topic": "one"}, state_key="", sender="@bob:hs.test")
    new = make("m.room.topic", {"topic": "two"}, state_key="")
    out = serialize_event(new, TS, extras=EventExtras(replaces_state=old))
    assert out["unsigned"]["replaces_state"] == old.event.event_id
    assert out["unsigned"]["prev_content"] == {"topic": "one"}
    assert out["unsigned"]["prev_sender"] == "@bob:hs.test"
    # A redacted predecessor shows its redacted content.
    out = serialize_event(
        new, TS, extras=EventExtras(replaces_state=old, replaced_state_redacted=True)
    )
    assert out["unsigned"]["prev_content"] == {}


def test_replaced_state_is_ignored_for_non_state_events() -> None:
    old = make("m.room.topic", {"topic": "one"}, state_key="")
    msg = make("m.room.message", {"body": "x"})
    unsigned = serialize_event(msg, TS, extras=EventExtras(replaces_state=old))["unsigned"]
    assert not {"replaces_state", "prev_content", "prev_sender"} & set(unsigned)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            {"m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}},
            Relation("m.thread", "$root"),
        ),
        (
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$e", "key": "👍"}},
            Relation("m.annotation", "$e", "👍"),
        ),
        ({"m.relates_to": {"m.in_reply_to": {"event_id": "$e"}}}, None),  # a reply: no rel_type
        ({"m.relates_to": {"rel_type": "m.thread"}}, None),
        ({"m.relates_to": {"rel_type": "m.thread", "event_id": "not-an-id"}}, None),
        ({"m.relates_to": {"rel_type": 5, "event_id": "$e"}}, None),
        ({"m.relates_to": {"rel_type": "", "event_id": "$e"}}, None),
        ({"m.relates_to": "nonsense"}, None),
        (
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$e", "key": 3}},
            Relation("m.annotation", "$e"),
        ),
        ({}, None),
    ],
)
def test_parse_relation(content: dict[str, Any], expected: Relation | None) -> None:
    assert parse_relation(content) == expected


def test_valid_replacement_on_its_own() -> None:
    rel = Relation("m.replace", "$orig")
    good = make("m.room.message", {"m.new_content": {"body": "b"}})
    assert is_valid_replacement_alone(good.event, rel)
    assert not is_valid_replacement_alone(make("m.room.message", {"body": "b"}).event, rel)
    assert not is_valid_replacement_alone(make("m.room.message", {"m.new_content": "x"}).event, rel)
    state = make("org.example.s", {"m.new_content": {}}, state_key="")
    assert not is_valid_replacement_alone(state.event, rel)
    # Encrypted edits carry m.new_content inside the ciphertext.
    assert is_valid_replacement_alone(make("m.room.encrypted", {"ciphertext": "..."}).event, rel)
    assert not is_valid_replacement_alone(good.event, Relation("m.thread", "$orig"))
