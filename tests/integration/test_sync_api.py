"""/sync, the filter API and /messages over HTTP against one real Ganglion process (SQLite).

Filters (upload, download, validation, every section applied), gappy syncs and
back-pagination from `prev_batch`, invite/knock/leave sections, lazy-loaded members,
`full_state`, `use_state_after`, the room summary, tokens (malformed, from the future,
old-style) and long-polling. After every test the server must have logged no error.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.matrix import MatrixClient, ok, quote
from tests.harness.single import SingleServer, single_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleServer]:
    with single_server(tmp_path_factory.mktemp("sync")) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_server_errors(server: SingleServer) -> Iterator[None]:
    with server.logs_no_new_errors():
        yield


def room_of(client: MatrixClient, **content: Any) -> str:
    return str(ok(client.create_room(**content))["room_id"])


def sync(client: MatrixClient, since: str | None = None, **params: Any) -> dict[str, Any]:
    query: dict[str, Any] = {"timeout": params.pop("timeout", 0)}
    if since is not None:
        query["since"] = since
    for key, value in params.items():
        query[key] = json.dumps(value) if isinstance(value, dict) else value
    body: dict[str, Any] = ok(client.call("GET", "sync", params=query, timeout=60))
    return body


def state_pairs(events: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(e["type"], e["state_key"]) for e in events}


def messages(client: MatrixClient, room_id: str, **params: Any) -> dict[str, Any]:
    query = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in params.items()}
    body: dict[str, Any] = ok(client.call("GET", f"rooms/{quote(room_id)}/messages", params=query))
    return body


# ------------------------------------------------------------------------------ filters


def test_filter_upload_and_download(server: SingleServer) -> None:
    alice = server.new_user("u")
    definition = {
        "room": {
            "timeline": {"limit": 2, "types": ["m.room.*"]},
            "state": {"lazy_load_members": True},
        },
        "presence": {"not_senders": ["@spam:localhost"]},
        "event_fields": ["type", "content.body"],
    }
    path = f"user/{quote(alice.user_id or '')}/filter"
    filter_id = ok(alice.call("POST", path, definition))["filter_id"]
    assert isinstance(filter_id, str) and not filter_id.startswith("{")
    assert ok(alice.call("GET", f"{path}/{quote(filter_id)}")) == definition
    # The same filter again is the same filter.
    assert ok(alice.call("POST", path, definition))["filter_id"] == filter_id
    other = ok(alice.call("POST", path, {"room": {"timeline": {"limit": 3}}}))["filter_id"]
    assert other != filter_id

    status, body = alice.call("GET", f"{path}/nosuchfilter")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    bob = server.new_user("u")
    status, body = bob.call("GET", f"{path}/{quote(filter_id)}")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = bob.call("POST", path, {})
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    # Bob's own namespace does not see alice's filter.
    status, _ = bob.call("GET", f"user/{quote(bob.user_id or '')}/filter/{quote(filter_id)}")
    assert status == 404


@pytest.mark.parametrize(
    ("definition", "mentions"),
    [
        ({"room": {"timeline": {"limit": "10"}}}, "room.timeline.limit"),
        ({"room": {"timeline": {"limit": -5}}}, "room.timeline.limit"),
        ({"room": {"state": {"types": "m.room.name"}}}, "room.state.types"),
        ({"room": {"include_leave": "yes"}}, "room.include_leave"),
        ({"room": {"rooms": [5]}}, "room.rooms[0]"),
        ({"presence": []}, "presence"),
        ({"event_format": "xml"}, "event_format"),
        ({"event_fields": [1]}, "event_fields[0]"),
    ],
)
def test_bad_filters_are_rejected_with_the_field(
    server: SingleServer, definition: Any, mentions: str
) -> None:
    alice = server.new_user("u")
    status, body = alice.call("POST", f"user/{quote(alice.user_id or '')}/filter", definition)
    assert (status, body["errcode"]) == (400, "M_BAD_JSON"), body
    assert mentions in body["error"]
    status, body = alice.call(
        "GET", "sync", params={"filter": json.dumps(definition), "timeout": 0}
    )
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), body


def test_bad_filter_parameters(server: SingleServer) -> None:
    alice = server.new_user("u")
    for value in ("{not json", "{}}", "nosuchid", "[1]"):
        status, body = alice.call("GET", "sync", params={"filter": value})
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), (value, body)
    room_id = room_of(alice)
    for value in ("{bad", '{"limit": "x"}', "[]"):
        status, body = alice.call(
            "GET", f"rooms/{quote(room_id)}/messages", params={"filter": value}
        )
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), (value, body)
    status, body = alice.call("POST", f"user/{quote(alice.user_id or '')}/filter", None)
    assert status == 400


def test_sync_applies_a_stored_filter(server: SingleServer) -> None:
    alice = server.new_user("u")
    room_id = room_of(alice, name="filtered")
    for i in range(5):
        ok(alice.send_text(room_id, f"m{i}"))
    path = f"user/{quote(alice.user_id or '')}/filter"
    filter_id = ok(
        alice.call("POST", path, {"room": {"timeline": {"limit": 2, "types": ["m.room.message"]}}})
    )["filter_id"]
    body = sync(alice, filter=filter_id)
    timeline = body["rooms"]["join"][room_id]["timeline"]
    assert [e["content"]["body"] for e in timeline["events"]] == ["m3", "m4"]
    assert timeline["limited"] is True


def test_timeline_state_and_room_filters(server: SingleServer) -> None:
    alice, bob = server.new_user("u"), server.new_user("u")
    room_id = room_of(alice, name="sections", preset="public_chat")
    other_room = room_of(alice, name="excluded")
    ok(bob.join(room_id))
    ok(alice.send_text(room_id, "from alice"))
    ok(bob.send_text(room_id, "from bob"))
    ok(alice.send(room_id, {"msgtype": "m.image", "body": "pic", "url": "mxc://localhost/x"}))
    ok(alice.send(room_id, {"x": 1}, event_type="org.example.custom"))

    body = sync(
        alice,
        filter={"room": {"timeline": {"not_senders": [bob.user_id], "not_types": ["m.room.*"]}}},
    )
    events = body["rooms"]["join"][room_id]["timeline"]["events"]
    assert [e["type"] for e in events] == ["org.example.custom"]

    body = sync(alice, filter={"room": {"timeline": {"senders": [bob.user_id]}}})
    events = body["rooms"]["join"][room_id]["timeline"]["events"]
    assert {e["sender"] for e in events} == {bob.user_id}

    body = sync(alice, filter={"room": {"timeline": {"contains_url": True, "limit": 50}}})
    assert [e["content"]["body"] for e in body["rooms"]["join"][room_id]["timeline"]["events"]] == [
        "pic"
    ]
    body = sync(
        alice, filter={"room": {"timeline": {"contains_url": False, "types": ["m.room.message"]}}}
    )
    bodies = [e["content"]["body"] for e in body["rooms"]["join"][room_id]["timeline"]["events"]]
    assert "pic" not in bodies and "from bob" in bodies

    body = sync(alice, filter={"room": {"not_rooms": [other_room]}})
    assert room_id in body["rooms"]["join"] and other_room not in body["rooms"]["join"]
    body = sync(alice, filter={"room": {"rooms": [other_room]}})
    assert list(body["rooms"]["join"]) == [other_room]

    body = sync(
        alice, filter={"room": {"timeline": {"limit": 0}, "state": {"types": ["m.room.n*"]}}}
    )
    room = body["rooms"]["join"][room_id]
    assert room["timeline"]["events"] == [] and room["timeline"]["limited"] is True
    assert state_pairs(room["state"]["events"]) == {("m.room.name", "")}

    body = sync(
        alice, filter={"event_fields": ["type", "content.body"], "room": {"timeline": {"limit": 1}}}
    )
    (event,) = body["rooms"]["join"][room_id]["timeline"]["events"]
    assert event == {"type": "org.example.custom"}

    body = sync(alice, filter={"event_format": "federation", "room": {"timeline": {"limit": 1}}})
    (event,) = body["rooms"]["join"][room_id]["timeline"]["events"]
    assert "hashes" in event and "signatures" in event and "unsigned" not in event


# ------------------------------------------------------------------ gaps and history


def test_gappy_sync_then_back_paginate_from_prev_batch(server: SingleServer) -> None:
    alice, bob = server.new_user("u"), server.new_user("u")
    room_id = room_of(alice, name="gaps", preset="public_chat")
    ok(bob.join(room_id))
    first = sync(bob)
    sent = [ok(alice.send_text(room_id, f"g{i}"))["event_id"] for i in range(3)]
    topic = {"topic": "changed in the gap"}
    topic_path = f"rooms/{quote(room_id)}/state/m.room.topic"
    topic_id = ok(alice.call("PUT", topic_path, topic))["event_id"]
    carol = server.new_user("u")
    ok(carol.join(room_id))
    sent += [ok(alice.send_text(room_id, f"g{i}"))["event_id"] for i in range(3, 12)]

    body = sync(bob, first["next_batch"], filter={"room": {"timeline": {"limit": 4}}})
    room = body["rooms"]["join"][room_id]
    timeline = room["timeline"]
    assert timeline["limited"] is True
    assert [e["event_id"] for e in timeline["events"]] == sent[-4:]
    state = {(e["type"], e["state_key"]): e for e in room["state"]["events"]}
    assert state[("m.room.topic", "")]["content"]["topic"] == "changed in the gap"
    assert state[("m.room.member", carol.user_id)]["content"]["membership"] == "join"
    assert room["summary"]["m.joined_member_count"] == 3

    # Paginating back from prev_batch yields exactly the gap, newest first, then stops.
    seen: list[str] = []
    token = timeline["prev_batch"]
    while True:
        page = messages(bob, room_id, dir="b", limit=3, **{"from": token})
        seen += [e["event_id"] for e in page["chunk"]]
        if "end" not in page:
            break
        token = page["end"]
    gap = list(reversed(seen))
    assert [eid for eid in gap if eid in set(sent)] == sent[:-4]
    assert topic_id in gap and not set(sent[-4:]) & set(seen)
    assert len(seen) == len(set(seen))


def test_messages_directions_bounds_and_filters(server: SingleServer) -> None:
    alice = server.new_user("u")
    room_id = room_of(alice)
    ids = [ok(alice.send_text(room_id, f"n{i}"))["event_id"] for i in range(5)]
    latest = messages(alice, room_id, dir="b", limit=100)
    assert "end" not in latest  # the start of the room reached
    assert [e["event_id"] for e in latest["chunk"][:5]] == list(reversed(ids))
    everything = [e["event_id"] for e in reversed(latest["chunk"])]

    forward = messages(alice, room_id, dir="f", limit=3)
    assert [e["event_id"] for e in forward["chunk"]] == everything[:3]
    assert forward["start"] == "s0" or forward["start"].startswith("s")
    rest = messages(alice, room_id, dir="f", limit=100, **{"from": forward["end"]})
    assert [e["event_id"] for e in rest["chunk"]] == everything[3:]
    assert "end" not in rest

    only_messages = messages(alice, room_id, dir="b", limit=3, filter={"types": ["m.room.message"]})
    assert [e["event_id"] for e in only_messages["chunk"]] == list(reversed(ids))[:3]
    more = messages(alice, room_id, dir="b", limit=3, filter={"types": ["m.room.message"]},
                    **{"from": only_messages["end"]})  # fmt: skip
    assert [e["event_id"] for e in more["chunk"]] == list(reversed(ids))[3:]

    # `to` bounds the page; `start` echoes `from`.
    now = sync(alice)["next_batch"]
    bounded = messages(alice, room_id, dir="b", limit=100, **{"from": now, "to": forward["end"]})
    assert bounded["start"] == now
    assert [e["event_id"] for e in bounded["chunk"]] == list(reversed(everything[3:]))
    assert "end" not in bounded

    lazy = messages(alice, room_id, dir="b", limit=2, filter={"lazy_load_members": True})
    assert state_pairs(lazy["state"]) == {("m.room.member", alice.user_id)}

    outsider = server.new_user("u")
    status, body = outsider.call("GET", f"rooms/{quote(room_id)}/messages")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


# ---------------------------------------------------------------- sections and state


def test_invite_knock_and_leave_sections(server: SingleServer) -> None:
    alice, bob = server.new_user("u"), server.new_user("u")
    room_id = room_of(alice, name="inv", invite=[bob.user_id])
    first = sync(bob)
    invite = first["rooms"]["invite"][room_id]["invite_state"]["events"]
    pairs = state_pairs(invite)
    assert ("m.room.name", "") in pairs and ("m.room.member", bob.user_id) in pairs
    assert all(set(e) == {"type", "state_key", "sender", "content"} for e in invite)

    ok(bob.call("POST", f"rooms/{quote(room_id)}/leave", {}))  # reject
    second = sync(bob, first["next_batch"])
    assert room_id in second["rooms"]["leave"] and room_id not in second["rooms"]["invite"]
    left = second["rooms"]["leave"][room_id]
    # Never joined: only their own membership events, none of the room's history or state.
    assert [e["content"]["membership"] for e in left["timeline"]["events"]] == ["invite", "leave"]
    assert {e["state_key"] for e in left["timeline"]["events"]} == {bob.user_id}
    assert left["state"]["events"] == []

    # Join, talk, leave: the leave section carries the timeline up to the leave.
    ok(alice.call("POST", f"rooms/{quote(room_id)}/invite", {"user_id": bob.user_id}))
    ok(bob.join(room_id))
    joined = sync(bob, second["next_batch"])
    assert room_id in joined["rooms"]["join"]
    ok(alice.send_text(room_id, "before you go"))
    ok(bob.call("POST", f"rooms/{quote(room_id)}/leave", {}))
    ok(alice.send_text(room_id, "after you left"))
    after = sync(bob, joined["next_batch"])
    timeline = after["rooms"]["leave"][room_id]["timeline"]["events"]
    assert [e.get("content", {}).get("body") for e in timeline][-2:] == ["before you go", None]
    assert "after you left" not in json.dumps(after)

    assert room_id not in sync(bob)["rooms"]["leave"]
    assert room_id in sync(bob, filter={"room": {"include_leave": True}})["rooms"]["leave"]

    knock_room = room_of(alice, room_version="10")
    ok(
        alice.call(
            "PUT", f"rooms/{quote(knock_room)}/state/m.room.join_rules", {"join_rule": "knock"}
        )
    )
    before_knock = sync(bob)
    ok(bob.call("POST", f"knock/{quote(knock_room)}", {}))
    knocked = sync(bob, before_knock["next_batch"])
    knock_state = knocked["rooms"]["knock"][knock_room]["knock_state"]["events"]
    assert ("m.room.member", bob.user_id) in state_pairs(knock_state)
    assert ("m.room.join_rules", "") in state_pairs(knock_state)
    # Nothing new: the knock is not repeated.
    assert knock_room not in sync(bob, knocked["next_batch"])["rooms"]["knock"]


def test_full_state_and_state_after(server: SingleServer) -> None:
    alice = server.new_user("u")
    room_id = room_of(alice, name="fs")
    first = sync(alice)
    ok(alice.send_text(room_id, "x"))
    full = sync(alice, first["next_batch"], full_state="true")
    room = full["rooms"]["join"][room_id]
    assert ("m.room.create", "") in state_pairs(room["state"]["events"])
    assert [e["content"].get("body") for e in room["timeline"]["events"]] == ["x"]
    # Full state, even with nothing new.
    assert room_id in sync(alice, full["next_batch"], full_state="true")["rooms"]["join"]

    ok(alice.call("PUT", f"rooms/{quote(room_id)}/state/m.room.topic", {"topic": "t1"}))
    after = sync(alice, full["next_batch"], use_state_after="true")
    room = after["rooms"]["join"][room_id]
    assert "state" not in room
    assert state_pairs(room["state_after"]["events"]) == {("m.room.topic", "")}
    initial_after = sync(alice, use_state_after="true")["rooms"]["join"][room_id]
    assert ("m.room.topic", "") in state_pairs(initial_after["state_after"]["events"])

    status, body = alice.call("GET", "sync", params={"full_state": "maybe"})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


def test_lazy_loaded_members_and_summary(server: SingleServer) -> None:
    alice, bob, carol, dave = (server.new_user("u") for _ in range(4))
    room_id = room_of(alice, preset="public_chat")
    for member in (bob, carol, dave):
        ok(member.join(room_id))
    ok(carol.send_text(room_id, "only carol talks"))
    lazy = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 1}}}
    first = sync(bob, filter=lazy)
    room = first["rooms"]["join"][room_id]
    members = {sk for t, sk in state_pairs(room["state"]["events"]) if t == "m.room.member"}
    heroes = room["summary"]["m.heroes"]
    assert bob.user_id not in heroes and len(heroes) == 3
    assert room["summary"]["m.joined_member_count"] == 4
    assert room["summary"]["m.invited_member_count"] == 0
    # The speaker, the syncing user, and the heroes; nobody else.
    assert members == {carol.user_id, bob.user_id, *heroes}

    non_lazy = sync(bob, filter={"room": {"timeline": {"limit": 1}}})["rooms"]["join"][room_id]
    assert {sk for t, sk in state_pairs(non_lazy["state"]["events"]) if t == "m.room.member"} == {
        alice.user_id, bob.user_id, carol.user_id, dave.user_id,
    }  # fmt: skip

    # Carol again: her membership is redundant now, unless asked for.
    ok(carol.send_text(room_id, "carol again"))
    again = sync(bob, first["next_batch"], filter=lazy)["rooms"]["join"][room_id]
    assert [e["content"]["body"] for e in again["timeline"]["events"]] == ["carol again"]
    assert again["state"]["events"] == []
    ok(carol.send_text(room_id, "and again"))
    redundant = {"room": {"state": {"lazy_load_members": True, "include_redundant_members": True}}}
    third = sync(bob, first["next_batch"], filter=redundant)["rooms"]["join"][room_id]
    assert ("m.room.member", carol.user_id) in state_pairs(third["state"]["events"])

    # unread counts are present and shaped; thread counts when asked for.
    assert room["unread_notifications"] == {"highlight_count": 0, "notification_count": 0}
    threads = sync(bob, filter={"room": {"timeline": {"unread_thread_notifications": True}}})
    assert threads["rooms"]["join"][room_id]["unread_thread_notifications"] == {}


# --------------------------------------------------------------------- tokens, polling


def test_tokens(server: SingleServer) -> None:
    alice = server.new_user("u")
    room_id = room_of(alice)
    first = sync(alice)
    token = first["next_batch"]
    assert token.startswith("s") and len(token) < 80
    for bad in ("x", "s", "s1__2", "s-1", "s" + "9" * 20, "s1_2_3_4_5_6_7_8"):
        status, body = alice.call("GET", "sync", params={"since": bad})
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), bad
    events_pos = int(token[1:].split("_")[0])
    started = time.monotonic()
    status, body = alice.call("GET", "sync", params={"since": f"s{events_pos + 1000}"})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    assert time.monotonic() - started < 1.0  # the writer knows at once
    # An old single-field token is still a valid token.
    body = sync(alice, f"s{events_pos}")
    assert body["next_batch"].startswith(f"s{events_pos}")
    assert room_id not in body["rooms"]["join"]


def test_long_poll_returns_when_something_happens(server: SingleServer) -> None:
    alice, bob = server.new_user("u"), server.new_user("u")
    room_id = room_of(alice, preset="public_chat")
    ok(bob.join(room_id))
    since = sync(bob)["next_batch"]
    result: dict[str, Any] = {}

    def poll() -> None:
        started = time.monotonic()
        result["body"] = sync(bob, since, timeout=20_000)
        result["took"] = time.monotonic() - started

    thread = threading.Thread(target=poll)
    thread.start()
    server.wait_for_waiting_listeners(1)
    ok(alice.send_text(room_id, "wake up"))
    thread.join(30)
    assert not thread.is_alive()
    assert result["took"] < 10
    events = result["body"]["rooms"]["join"][room_id]["timeline"]["events"]
    assert [e["content"]["body"] for e in events] == ["wake up"]

    # Nothing happens: the poll returns empty after its timeout.
    started = time.monotonic()
    quiet = sync(bob, result["body"]["next_batch"], timeout=1000)
    assert 0.9 <= time.monotonic() - started < 10
    assert quiet["rooms"]["join"] == {}
