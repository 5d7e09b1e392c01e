"""Room endpoints over HTTP against one real Ganglion process (SQLite).

Membership (join by ID and alias, invite, leave, forget, kick, ban, unban, knock,
restricted joins, /joined_rooms), reads (/state, /state/{type}/{key}, /event, /context,
/members, /joined_members, /timestamp_to_event), writes (redact, upgrade, reports), power
levels and the event size limit, and the history-visibility matrix. After every test the
server must have logged no internal error.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.matrix import CLIENT_V3, MatrixClient, ok, quote, request_raw
from tests.harness.single import SingleServer, single_server

BODY_LIMIT = 98_304
MAX_PDU = 65_536


def _raise_body_limit(config: dict[str, Any]) -> None:
    config["limits"]["max_json_body_size"] = BODY_LIMIT


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleServer]:
    with single_server(tmp_path_factory.mktemp("rooms"), tweak=_raise_body_limit) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_internal_errors(server: SingleServer) -> Iterator[None]:
    with server.logs_no_new_errors():
        yield


def err(result: tuple[int, Any], status: int, errcode: str) -> None:
    got, body = result
    assert (got, body.get("errcode") if isinstance(body, dict) else body) == (status, errcode), body
    assert isinstance(body.get("error"), str)


def room_path(room_id: str, *rest: str) -> str:
    return "/".join([f"rooms/{quote(room_id)}", *(quote(r) for r in rest)])


def new_room(owner: MatrixClient, **content: Any) -> str:
    room_id: str = ok(owner.create_room(**content))["room_id"]
    return room_id


def send_text(client: MatrixClient, room_id: str, text: str) -> str:
    event_id: str = ok(client.send_text(room_id, text))["event_id"]
    return event_id


def membership_of(client: MatrixClient, room_id: str, user_id: str) -> str | None:
    status, body = client.call("GET", room_path(room_id, "state", "m.room.member", user_id))
    return body.get("membership") if status == 200 else None


def post(client: MatrixClient, room_id: str, action: str, body: Any) -> tuple[int, Any]:
    return client.call("POST", room_path(room_id, action), body)


# ------------------------------------------------------------------ membership --


def test_join_by_room_id_and_errors(server: SingleServer) -> None:
    alice, bob = server.new_user(), server.new_user()
    public = new_room(alice, preset="public_chat")
    assert ok(bob.call("POST", room_path(public, "join"), {})) == {"room_id": public}
    assert membership_of(alice, public, bob.user_id or "") == "join"
    private = new_room(alice)
    err(bob.call("POST", room_path(private, "join"), {}), 403, "M_FORBIDDEN")
    err(bob.call("POST", room_path("!nope:localhost", "join"), {}), 404, "M_NOT_FOUND")
    err(bob.call("POST", room_path(public, "join"), {"reason": 5}), 400, "M_BAD_JSON")


def test_join_by_alias(server: SingleServer) -> None:
    alice, bob = server.new_user(), server.new_user()
    room = new_room(alice, preset="public_chat")
    err(bob.join(f"#missing-{uuid.uuid4().hex}:localhost"), 404, "M_NOT_FOUND")
    err(bob.join("not-an-id"), 400, "M_INVALID_PARAM")
    alias = f"#a{uuid.uuid4().hex[:10]}:localhost"
    status, body = alice.call("PUT", f"directory/room/{quote(alias)}", {"room_id": room})
    assert status == 200, body
    assert ok(bob.join(alias)) == {"room_id": room}
    assert membership_of(alice, room, bob.user_id or "") == "join"


def test_invite_then_join_and_leave(server: SingleServer) -> None:
    alice, bob, carol = server.new_user(), server.new_user(), server.new_user()
    room = new_room(alice)
    ok(post(alice, room, "invite", {"user_id": bob.user_id, "reason": "come"}))
    assert membership_of(alice, room, bob.user_id or "") == "invite"
    # Only members may invite.
    err(post(carol, room, "invite", {"user_id": carol.user_id}), 403, "M_FORBIDDEN")
    err(post(alice, room, "invite", {"user_id": "nope"}), 400, "M_INVALID_PARAM")
    err(post(alice, room, "invite", {}), 400, "M_MISSING_PARAM")
    ok(bob.join(room))
    err(post(alice, room, "invite", {"user_id": bob.user_id}), 403, "M_FORBIDDEN")
    ok(post(bob, room, "leave", {}))
    assert membership_of(alice, room, bob.user_id or "") == "leave"
    assert room not in ok(bob.call("GET", "joined_rooms"))["joined_rooms"]
    # Leaving a room one is not in.
    err(post(carol, room, "leave", {}), 403, "M_FORBIDDEN")


def test_forget(server: SingleServer) -> None:
    alice, bob = server.new_user(), server.new_user()
    room = new_room(alice, preset="public_chat")
    err(post(bob, room, "forget", {}), 404, "M_NOT_FOUND")
    ok(bob.join(room))
    err(post(bob, room, "forget", {}), 400, "M_UNKNOWN")
    ok(post(bob, room, "leave", {}))
    ok(post(bob, room, "forget", {}))
    forgotten = "SELECT 1 FROM room_forgotten WHERE user_id = ? AND room_id = ?"
    assert server.query(forgotten, (bob.user_id, room)) == [(1,)]
    ok(post(bob, room, "forget", {}))  # idempotent
    ok(bob.join(room))
    assert server.query(forgotten, (bob.user_id, room)) == []


def test_kick_ban_unban(server: SingleServer) -> None:
    alice, bob, carol = server.new_user(), server.new_user(), server.new_user()
    room = new_room(alice, preset="public_chat")
    ok(bob.join(room))
    ok(carol.join(room))
    # bob (power 0) may not kick or ban.
    err(post(bob, room, "kick", {"user_id": carol.user_id}), 403, "M_FORBIDDEN")
    err(post(bob, room, "ban", {"user_id": carol.user_id}), 403, "M_FORBIDDEN")
    ok(post(alice, room, "kick", {"user_id": carol.user_id, "reason": "bye"}))
    status, member = alice.call(
        "GET",
        room_path(room, "state", "m.room.member", carol.user_id or ""),
        params={"format": "event"},
    )
    assert status == 200 and member["content"] == {"membership": "leave", "reason": "bye"}
    assert member["sender"] == alice.user_id
    # Kicking someone not in the room.
    err(post(alice, room, "kick", {"user_id": carol.user_id}), 403, "M_FORBIDDEN")
    ok(post(alice, room, "ban", {"user_id": carol.user_id}))
    assert membership_of(alice, room, carol.user_id or "") == "ban"
    err(carol.join(room), 403, "M_FORBIDDEN")
    err(post(alice, room, "unban", {"user_id": bob.user_id}), 403, "M_FORBIDDEN")
    ok(post(alice, room, "unban", {"user_id": carol.user_id}))
    assert membership_of(alice, room, carol.user_id or "") == "leave"
    ok(carol.join(room))
    err(post(alice, room, "ban", {"user_id": 7}), 400, "M_BAD_JSON")


def test_knock(server: SingleServer) -> None:
    alice, bob = server.new_user(), server.new_user()
    room = new_room(
        alice, initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}]
    )
    assert ok(bob.call("POST", f"knock/{quote(room)}", {"reason": "let me in"})) == {
        "room_id": room
    }
    assert membership_of(alice, room, bob.user_id or "") == "knock"
    ok(post(alice, room, "invite", {"user_id": bob.user_id}))
    ok(bob.join(room))
    public = new_room(alice, preset="public_chat")
    err(bob.call("POST", f"knock/{quote(public)}", {}), 403, "M_FORBIDDEN")
    old = new_room(
        alice,
        room_version="6",
        initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}],
    )
    err(bob.call("POST", f"knock/{quote(old)}", {}), 403, "M_FORBIDDEN")
    err(bob.call("POST", f"knock/{quote('!missing:localhost')}", {}), 404, "M_NOT_FOUND")


@pytest.mark.parametrize("rule", ["restricted", "knock_restricted"])
def test_restricted_join(server: SingleServer, rule: str) -> None:
    alice, bob = server.new_user(), server.new_user()
    space = new_room(alice, preset="public_chat")
    room = new_room(
        alice,
        room_version="10",
        initial_state=[
            {
                "type": "m.room.join_rules",
                "content": {
                    "join_rule": rule,
                    "allow": [{"type": "m.room_membership", "room_id": space}],
                },
            }
        ],
    )
    err(bob.join(room), 403, "M_FORBIDDEN")
    ok(bob.join(space))
    ok(bob.join(room))
    status, member = alice.call(
        "GET",
        room_path(room, "state", "m.room.member", bob.user_id or ""),
        params={"format": "event"},
    )
    assert status == 200, member
    assert member["content"]["join_authorised_via_users_server"] == alice.user_id


def test_joined_rooms(server: SingleServer) -> None:
    alice, bob = server.new_user(), server.new_user()
    rooms = sorted(new_room(alice) for _ in range(2))
    assert sorted(ok(alice.call("GET", "joined_rooms"))["joined_rooms"]) == rooms
    assert ok(bob.call("GET", "joined_rooms")) == {"joined_rooms": []}
    err(bob.call("GET", "joined_rooms", authed=False), 401, "M_MISSING_TOKEN")


# ---------------------------------------------------------------------- state --


def test_state_reads(server: SingleServer) -> None:
    alice, bob, carol = server.new_user(), server.new_user(), server.new_user()
    room = new_room(alice, preset="public_chat", name="First")
    ok(bob.join(room))
    state = ok(bob.call("GET", room_path(room, "state")))
    keys = {(e["type"], e["state_key"]) for e in state}
    assert {("m.room.create", ""), ("m.room.name", ""), ("m.room.member", bob.user_id)} <= keys
    assert ok(bob.call("GET", room_path(room, "state", "m.room.name"))) == {"name": "First"}
    assert ok(bob.call("GET", room_path(room, "state", "m.room.name", ""))) == {"name": "First"}
    full = ok(
        bob.call("GET", room_path(room, "state", "m.room.name", ""), params={"format": "event"})
    )
    assert (
        full["type"] == "m.room.name"
        and full["content"] == {"name": "First"}
        and "event_id" in full
    )
    err(bob.call("GET", room_path(room, "state", "m.room.topic", "")), 404, "M_NOT_FOUND")
    err(
        bob.call("GET", room_path(room, "state", "m.room.name", ""), params={"format": "x"}),
        400,
        "M_INVALID_PARAM",
    )
    # Never a member: no state (shared history is not world-readable).
    err(carol.call("GET", room_path(room, "state")), 403, "M_FORBIDDEN")
    err(carol.call("GET", room_path(room, "state", "m.room.name", "")), 403, "M_FORBIDDEN")
    err(carol.call("GET", room_path("!missing:localhost", "state")), 403, "M_FORBIDDEN")
    # A former member sees the state as it was when they left.
    ok(post(bob, room, "leave", {}))
    ok(alice.call("PUT", room_path(room, "state", "m.room.name", ""), {"name": "Second"}))
    assert ok(bob.call("GET", room_path(room, "state", "m.room.name", ""))) == {"name": "First"}
    names = [e for e in ok(bob.call("GET", room_path(room, "state"))) if e["type"] == "m.room.name"]
    assert [e["content"] for e in names] == [{"name": "First"}]
    assert ok(alice.call("GET", room_path(room, "state", "m.room.name", ""))) == {"name": "Second"}


def test_world_readable_state_for_non_members(server: SingleServer) -> None:
    alice, carol = server.new_user(), server.new_user()
    room = new_room(
        alice,
        name="Open",
        initial_state=[
            {
                "type": "m.room.history_visibility",
                "content": {"history_visibility": "world_readable"},
            }
        ],
    )
    assert ok(carol.call("GET", room_path(room, "state", "m.room.name", ""))) == {"name": "Open"}
    members = ok(carol.call("GET", room_path(room, "members")))["chunk"]
    assert [m["state_key"] for m in members] == [alice.user_id]
    # /joined_members needs membership.
    err(carol.call("GET", room_path(room, "joined_members")), 403, "M_FORBIDDEN")


# -------------------------------------------------------------- event, context --


def test_get_event(server: SingleServer) -> None:
    alice, bob = server.new_user(), server.new_user()
    room = new_room(alice)
    other = new_room(alice)
    event_id = send_text(alice, room, "hello")
    event = ok(alice.call("GET", room_path(room, "event", event_id)))
    assert event["event_id"] == event_id and event["content"]["body"] == "hello"
    assert event["room_id"] == room and event["sender"] == alice.user_id
    err(alice.call("GET", room_path(room, "event", "$nope")), 404, "M_NOT_FOUND")
    err(alice.call("GET", room_path(other, "event", event_id)), 404, "M_NOT_FOUND")
    err(bob.call("GET", room_path(room, "event", event_id)), 404, "M_NOT_FOUND")


def test_context(server: SingleServer) -> None:
    alice, bob = server.new_user(), server.new_user()
    room = new_room(alice, preset="public_chat")
    ok(bob.join(room))
    ids = [send_text(alice if i % 2 else bob, room, f"m{i}") for i in range(9)]
    middle = ids[4]
    body = ok(alice.call("GET", room_path(room, "context", middle), params={"limit": 4}))
    assert body["event"]["event_id"] == middle
    assert [e["event_id"] for e in body["events_before"]] == [ids[3], ids[2]]
    assert [e["event_id"] for e in body["events_after"]] == [ids[5], ids[6]]
    keys = {(e["type"], e["state_key"]) for e in body["state"]}
    assert ("m.room.create", "") in keys and ("m.room.member", bob.user_id) in keys
    # The tokens continue where the context stopped.
    older = ok(
        alice.call(
            "GET",
            room_path(room, "messages"),
            params={"dir": "b", "from": body["start"], "limit": 1},
        )
    )
    assert [e["event_id"] for e in older["chunk"]] == [ids[1]]
    newer = ok(
        alice.call(
            "GET", room_path(room, "messages"), params={"dir": "f", "from": body["end"], "limit": 1}
        )
    )
    assert [e["event_id"] for e in newer["chunk"]] == [ids[7]]
    # lazy_load_members: only the senders of the returned events (here only alice's).
    lazy = ok(
        alice.call(
            "GET",
            room_path(room, "context", ids[5]),
            params={"limit": 0, "filter": json.dumps({"lazy_load_members": True})},
        )
    )
    members = {e["state_key"] for e in lazy["state"] if e["type"] == "m.room.member"}
    assert members == {alice.user_id}
    assert lazy["events_before"] == [] and lazy["events_after"] == []
    typed = ok(
        alice.call(
            "GET",
            room_path(room, "context", middle),
            params={"limit": 2, "filter": json.dumps({"senders": [alice.user_id]})},
        )
    )
    assert [e["event_id"] for e in typed["events_before"]] == [ids[3]]
    assert [e["event_id"] for e in typed["events_after"]] == [ids[5]]
    err(alice.call("GET", room_path(room, "context", "$missing")), 404, "M_NOT_FOUND")
    err(
        alice.call("GET", room_path(room, "context", middle), params={"filter": "{bad"}),
        400,
        "M_INVALID_PARAM",
    )
    err(
        alice.call("GET", room_path(room, "context", middle), params={"filter": '{"types": 3}'}),
        400,
        "M_INVALID_PARAM",
    )
    err(
        alice.call("GET", room_path(room, "context", middle), params={"limit": "x"}),
        400,
        "M_INVALID_PARAM",
    )
    err(
        alice.call("GET", room_path(room, "context", middle), params={"limit": -1}),
        400,
        "M_INVALID_PARAM",
    )


# -------------------------------------------------------------------- members --


def test_members(server: SingleServer) -> None:
    alice, bob, carol = server.new_user(), server.new_user(), server.new_user()
    room = new_room(alice, preset="public_chat")
    ok(bob.join(room))
    status, sync = alice.sync()
    assert status == 200, sync
    before_carol = sync["next_batch"]
    ok(post(alice, room, "invite", {"user_id": carol.user_id}))

    def members(**params: Any) -> dict[str, str]:
        chunk = ok(alice.call("GET", room_path(room, "members"), params=params))["chunk"]
        return {e["state_key"]: e["content"]["membership"] for e in chunk}

    everyone = {alice.user_id: "join", bob.user_id: "join", carol.user_id: "invite"}
    assert members() == everyone
    assert members(membership="invite") == {carol.user_id: "invite"}
    assert members(not_membership="invite") == {alice.user_id: "join", bob.user_id: "join"}
    assert members(at=before_carol) == {alice.user_id: "join", bob.user_id: "join"}
    err(
        alice.call("GET", room_path(room, "members"), params={"membership": "joined"}),
        400,
        "M_INVALID_PARAM",
    )
    err(
        alice.call("GET", room_path(room, "members"), params={"at": "garbage"}),
        400,
        "M_INVALID_PARAM",
    )
    outsider = server.new_user()
    err(outsider.call("GET", room_path(room, "members")), 403, "M_FORBIDDEN")

    joined = ok(alice.call("GET", room_path(room, "joined_members")))["joined"]
    assert set(joined) == {alice.user_id, bob.user_id}
    err(carol.call("GET", room_path(room, "joined_members")), 403, "M_FORBIDDEN")


def test_timestamp_to_event(server: SingleServer) -> None:
    alice, carol = server.new_user(), server.new_user()
    room = new_room(alice)
    first = ok(alice.call("GET", room_path(room, "event", send_text(alice, room, "one"))))
    second = ok(alice.call("GET", room_path(room, "event", send_text(alice, room, "two"))))
    path = room_path(room, "timestamp_to_event")
    found = ok(alice.call("GET", path, params={"ts": second["origin_server_ts"] + 1, "dir": "b"}))
    assert found == {"event_id": second["event_id"], "origin_server_ts": second["origin_server_ts"]}
    found = ok(alice.call("GET", path, params={"ts": first["origin_server_ts"], "dir": "f"}))
    assert found["origin_server_ts"] == first["origin_server_ts"]
    err(
        alice.call("GET", path, params={"ts": second["origin_server_ts"] + 60_000, "dir": "f"}),
        404,
        "M_NOT_FOUND",
    )
    err(alice.call("GET", path, params={"dir": "f"}), 400, "M_MISSING_PARAM")
    err(alice.call("GET", path, params={"ts": 1}), 400, "M_MISSING_PARAM")
    err(alice.call("GET", path, params={"ts": 1, "dir": "x"}), 400, "M_INVALID_PARAM")
    err(alice.call("GET", path, params={"ts": "soon", "dir": "f"}), 400, "M_INVALID_PARAM")
    # A timestamp past any integer the database holds is clamped, not a 500.
    err(alice.call("GET", path, params={"ts": "9" * 30, "dir": "f"}), 404, "M_NOT_FOUND")
    err(carol.call("GET", path, params={"ts": 1, "dir": "f"}), 403, "M_FORBIDDEN")
    # Unversioned v1 path as the spec names it.
    status, body = alice.call("GET", f"/_matrix/client/v1/{path}?ts=1&dir=f")
    assert status in (200, 404), body


# --------------------------------------------------------- redaction, power, size --


def test_redact(server: SingleServer) -> None:
    alice, bob = server.new_user(), server.new_user()
    room = new_room(alice, preset="public_chat")
    ok(bob.join(room))
    mine = send_text(bob, room, "oops")
    theirs = send_text(alice, room, "alice's")
    redaction = ok(bob.call("PUT", room_path(room, "redact", mine, "t1"), {"reason": "typo"}))
    event = ok(bob.call("GET", room_path(room, "event", redaction["event_id"])))
    assert event["type"] == "m.room.redaction" and event["content"]["reason"] == "typo"
    assert event.get("redacts", event["content"].get("redacts")) == mine
    # Same transaction: same event.
    assert (
        ok(bob.call("PUT", room_path(room, "redact", mine, "t1"), {"reason": "typo"})) == redaction
    )
    err(bob.call("PUT", room_path(room, "redact", theirs, "t2"), {}), 403, "M_FORBIDDEN")
    ok(alice.call("PUT", room_path(room, "redact", mine, "t3"), {}))
    err(bob.call("PUT", room_path(room, "redact", mine, "t4"), {"reason": 1}), 400, "M_BAD_JSON")


def test_power_levels_and_size_limit(server: SingleServer) -> None:
    alice, bob = server.new_user(), server.new_user()
    room = new_room(alice, preset="public_chat")
    ok(bob.join(room))
    for event_type in ("m.room.name", "m.room.power_levels", "m.room.history_visibility"):
        err(
            bob.call("PUT", room_path(room, "state", event_type, ""), {"name": "x"}),
            403,
            "M_FORBIDDEN",
        )
    err(
        bob.call(
            "PUT",
            room_path(room, "state", "m.room.member", alice.user_id or ""),
            {"membership": "leave"},
        ),
        403,
        "M_FORBIDDEN",
    )
    ok(alice.call("PUT", room_path(room, "state", "m.room.name", ""), {"name": "ok"}))
    big = {"msgtype": "m.text", "body": "x" * (MAX_PDU + 10)}
    err(bob.send(room, big), 413, "M_TOO_LARGE")
    err(
        alice.call("PUT", room_path(room, "state", "m.room.topic", ""), {"topic": "y" * MAX_PDU}),
        413,
        "M_TOO_LARGE",
    )
    # Nothing of either was stored.
    chunk = ok(alice.call("GET", room_path(room, "messages"), params={"dir": "b", "limit": 5}))[
        "chunk"
    ]
    assert all(len(json.dumps(e)) < MAX_PDU for e in chunk)


# -------------------------------------------------------------------- upgrade --


def test_upgrade(server: SingleServer) -> None:
    alice, bob, carol = server.new_user(), server.new_user(), server.new_user()
    room = new_room(alice, preset="public_chat", room_version="10", name="Old")
    ok(bob.join(room))
    ok(carol.join(room))
    pl = ok(alice.call("GET", room_path(room, "state", "m.room.power_levels", "")))
    pl["users"][bob.user_id] = 50
    ok(alice.call("PUT", room_path(room, "state", "m.room.power_levels", ""), pl))

    err(post(bob, room, "upgrade", {"new_version": "11"}), 403, "M_FORBIDDEN")
    err(post(alice, room, "upgrade", {"new_version": "999"}), 400, "M_UNSUPPORTED_ROOM_VERSION")
    err(post(alice, room, "upgrade", {}), 400, "M_MISSING_PARAM")
    err(post(alice, room, "upgrade", {"new_version": 11}), 400, "M_BAD_JSON")
    err(
        post(alice, room, "upgrade", {"new_version": "11", "additional_creators": "x"}),
        400,
        "M_BAD_JSON",
    )
    err(post(carol, "!missing:localhost", "upgrade", {"new_version": "11"}), 404, "M_NOT_FOUND")

    new = ok(post(alice, room, "upgrade", {"new_version": "12"}))["replacement_room"]
    assert new != room
    tombstone = ok(alice.call("GET", room_path(room, "state", "m.room.tombstone", "")))
    assert tombstone["replacement_room"] == new
    create = ok(
        alice.call("GET", room_path(new, "state", "m.room.create", ""), params={"format": "event"})
    )
    assert create["content"]["room_version"] == "12"
    assert create["content"]["predecessor"]["room_id"] == room
    assert create["sender"] == alice.user_id
    new_pl = ok(alice.call("GET", room_path(new, "state", "m.room.power_levels", "")))
    # v12: the creator is all-powerful and not listed; bob keeps 50.
    assert new_pl["users"] == {bob.user_id: 50}
    assert ok(alice.call("GET", room_path(new, "state", "m.room.name", ""))) == {"name": "Old"}
    rules = ok(alice.call("GET", room_path(new, "state", "m.room.join_rules", "")))
    assert rules["join_rule"] == "public"
    old_pl = ok(alice.call("GET", room_path(room, "state", "m.room.power_levels", "")))
    assert old_pl["events_default"] == 50 and old_pl["invite"] == 50
    # carol (power 0) can no longer talk in the old room, and can join the new one.
    err(carol.send_text(room, "still here?"), 403, "M_FORBIDDEN")
    ok(carol.join(new))


def test_upgrade_to_older_scheme_keeps_creator_power(server: SingleServer) -> None:
    alice, bob = server.new_user(), server.new_user()
    room = new_room(alice, preset="public_chat", room_version="12")
    ok(bob.join(room))
    ok(
        alice.call(
            "PUT",
            room_path(room, "state", "m.room.power_levels", ""),
            {
                **ok(alice.call("GET", room_path(room, "state", "m.room.power_levels", ""))),
                # v12 rooms put m.room.tombstone at 150.
                "users": {bob.user_id: 150},
            },
        )
    )
    # bob (150, not a creator) upgrades to v11: he becomes the creator and keeps his
    # level; alice, an all-powerful creator in v12, keeps 100.
    new = ok(post(bob, room, "upgrade", {"new_version": "11"}))["replacement_room"]
    new_pl = ok(bob.call("GET", room_path(new, "state", "m.room.power_levels", "")))
    assert new_pl["users"] == {bob.user_id: 150, alice.user_id: 100}


# -------------------------------------------------------------------- reports --


def test_reports(server: SingleServer) -> None:
    alice, bob = server.new_user(), server.new_user()
    room = new_room(alice)
    event_id = send_text(alice, room, "bad")
    ok(alice.call("POST", room_path(room, "report", event_id), {"reason": "spam"}))
    ok(alice.call("POST", room_path(room, "report", event_id), {}))
    ok(bob.call("POST", room_path(room, "report"), {"reason": ""}))
    rows = server.query(
        "SELECT event_id, reporter, reason FROM content_reports WHERE room_id = ?",
        (room,),
    )
    assert sorted(rows, key=repr) == sorted(
        [
            (event_id, alice.user_id, "spam"),
            (event_id, alice.user_id, None),
            (None, bob.user_id, ""),
        ],
        key=repr,
    )
    err(bob.call("POST", room_path(room, "report", event_id), {"reason": "x"}), 404, "M_NOT_FOUND")
    err(
        alice.call("POST", room_path(room, "report", "$missing"), {"reason": "x"}),
        404,
        "M_NOT_FOUND",
    )
    err(
        bob.call("POST", room_path("!missing:localhost", "report"), {"reason": "x"}),
        404,
        "M_NOT_FOUND",
    )
    err(bob.call("POST", room_path(room, "report"), {}), 400, "M_MISSING_PARAM")
    err(alice.call("POST", room_path(room, "report", event_id), {"reason": 3}), 400, "M_BAD_JSON")


# ----------------------------------------------------------- history visibility --

# visibility -> viewer -> (event before their membership, event after it, event after
# the leaver left): whether the viewer may see it.
VISIBILITY_MATRIX: dict[str, dict[str, tuple[bool, bool, bool]]] = {
    "world_readable": {
        "joined": (True, True, True),
        "left": (True, True, True),
        "invited": (True, True, True),
        "never": (True, True, True),
    },
    "shared": {
        "joined": (True, True, True),
        "left": (True, True, False),
        "invited": (False, False, False),
        "never": (False, False, False),
    },
    "invited": {
        "joined": (False, True, True),
        "left": (False, True, False),
        "invited": (False, True, True),
        "never": (False, False, False),
    },
    "joined": {
        "joined": (False, True, True),
        "left": (False, True, False),
        "invited": (False, False, False),
        "never": (False, False, False),
    },
}


@pytest.mark.parametrize("visibility", sorted(VISIBILITY_MATRIX))
def test_history_visibility_matrix(server: SingleServer, visibility: str) -> None:
    alice = server.new_user()
    viewers = {name: server.new_user(name) for name in ("joined", "left", "invited", "never")}
    room = new_room(
        alice,
        preset="public_chat",
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": visibility}}
        ],
    )
    before = send_text(alice, room, "before")
    ok(viewers["joined"].join(room))
    ok(viewers["left"].join(room))
    ok(post(alice, room, "invite", {"user_id": viewers["invited"].user_id}))
    during = send_text(alice, room, "during")
    ok(post(viewers["left"], room, "leave", {}))
    after_leave = send_text(alice, room, "after leave")

    got = {}
    for name, viewer in viewers.items():
        seen = []
        for event_id in (before, during, after_leave):
            status, body = viewer.call("GET", room_path(room, "event", event_id))
            assert status in (200, 404), body
            seen.append(status == 200)
        got[name] = tuple(seen)
    assert got == VISIBILITY_MATRIX[visibility]

    # /context applies the same rules to the events around a visible one.
    status, body = viewers["left"].call(
        "GET", room_path(room, "context", during), params={"limit": 20}
    )
    assert status == 200, body
    around = {e["event_id"] for e in body["events_before"] + body["events_after"]}
    assert (before in around) == VISIBILITY_MATRIX[visibility]["left"][0]
    assert (after_leave in around) == VISIBILITY_MATRIX[visibility]["left"][2]


def test_own_membership_and_visibility_changes_are_visible(server: SingleServer) -> None:
    alice, bob = server.new_user(), server.new_user()
    room = new_room(
        alice,
        preset="public_chat",
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}
        ],
    )
    ok(bob.join(room))
    ok(post(bob, room, "leave", {}))
    leave_id = ok(
        alice.call(
            "GET",
            room_path(room, "state", "m.room.member", bob.user_id or ""),
            params={"format": "event"},
        )
    )["event_id"]
    # Bob's own leave: his membership before it (join) lets him see it.
    ok(bob.call("GET", room_path(room, "event", leave_id)))
    # Switching joined -> world_readable is visible to a non-member (the "after" value).
    change = ok(
        alice.call(
            "PUT",
            room_path(room, "state", "m.room.history_visibility", ""),
            {"history_visibility": "world_readable"},
        )
    )["event_id"]
    stranger = server.new_user()
    ok(stranger.call("GET", room_path(room, "event", change)))
    back = ok(
        alice.call(
            "PUT",
            room_path(room, "state", "m.room.history_visibility", ""),
            {"history_visibility": "joined"},
        )
    )["event_id"]
    # ... and back (the "before" value).
    ok(stranger.call("GET", room_path(room, "event", back)))
    hidden = send_text(alice, room, "members only")
    err(stranger.call("GET", room_path(room, "event", hidden)), 404, "M_NOT_FOUND")


# ------------------------------------------------------------------ bad input --

BAD_BODIES = [b"{bad", b"[]", b'"x"', b"\xff", b'{"a": NaN}']


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "rooms/{room}/join"),
        ("POST", "join/{room}"),
        ("POST", "knock/{room}"),
        ("POST", "rooms/{room}/invite"),
        ("POST", "rooms/{room}/leave"),
        ("POST", "rooms/{room}/forget"),
        ("POST", "rooms/{room}/kick"),
        ("POST", "rooms/{room}/ban"),
        ("POST", "rooms/{room}/unban"),
        ("PUT", "rooms/{room}/redact/$x/txn"),
        ("POST", "rooms/{room}/upgrade"),
        ("POST", "rooms/{room}/report/$x"),
        ("POST", "rooms/{room}/report"),
    ],
)
def test_bad_bodies(server: SingleServer, method: str, path: str) -> None:
    alice = server.new_user()
    room = new_room(alice, preset="public_chat")
    url = f"{server.base_url}{CLIENT_V3}/{path.format(room=quote(room))}"
    for raw in BAD_BODIES:
        status, _, data = request_raw(method, url, raw, access_token=alice.access_token)
        body = json.loads(data)
        assert status == 400 and body["errcode"] in ("M_NOT_JSON", "M_BAD_JSON"), (raw, body)
    # Every JSON type in the place of each string/object field.
    values: tuple[Any, ...] = (None, 1, True, [], {}, "\u00e9")
    for value in values:
        for field in ("user_id", "reason", "new_version", "additional_creators"):
            status, _, data = request_raw(
                method, url, {field: value}, access_token=alice.access_token
            )
            assert 200 <= status < 500, (field, value, data)
            if status >= 400:
                assert json.loads(data)["errcode"].startswith("M_"), data
    status, _, data = request_raw(method, url, {}, access_token=None)
    assert status == 401, data


@pytest.mark.parametrize(
    "path,params",
    [
        ("rooms/{room}/state", {}),
        ("rooms/{room}/state/m.room.name/", {"format": "\u00ff"}),
        ("rooms/{room}/event/%00", {}),
        ("rooms/{room}/context/$x", {"limit": "1e3"}),
        ("rooms/{room}/context/$x", {"filter": "[]"}),
        ("rooms/{room}/members", {"at": "s99999999999999999999"}),
        ("rooms/{room}/members", {"not_membership": ""}),
        ("rooms/{room}/timestamp_to_event", {"ts": "-1", "dir": "f"}),
        ("rooms/{room}/timestamp_to_event", {"ts": "99999999999999999999999", "dir": "f"}),
        ("rooms/%ZZ/members", {}),
        ("rooms/{room}/joined_members", {}),
    ],
)
def test_bad_query_input(server: SingleServer, path: str, params: dict[str, str]) -> None:
    alice, stranger = server.new_user(), server.new_user()
    room = new_room(alice)
    for client in (alice, stranger):
        status, body = client.call("GET", path.format(room=quote(room)), params=params)
        assert status < 500, body
        if status >= 400:
            assert isinstance(body, dict) and body["errcode"].startswith("M_"), body


def test_upgrade_moves_local_aliases_canonical_alias_and_listing(server: SingleServer) -> None:
    alice = server.new_user()
    alias = f"#up{uuid.uuid4().hex[:10]}:localhost"
    extra = f"#up{uuid.uuid4().hex[:10]}:localhost"
    room = new_room(
        alice, preset="public_chat", visibility="public", room_alias_name=alias[1:].split(":")[0]
    )
    ok(alice.call("PUT", f"directory/room/{quote(extra)}", {"room_id": room}))
    ok(
        alice.call(
            "PUT",
            room_path(room, "state", "m.room.canonical_alias", ""),
            {"alias": alias, "alt_aliases": [extra]},
        )
    )
    new = ok(post(alice, room, "upgrade", {"new_version": "12"}))["replacement_room"]

    for name in (alias, extra):
        assert ok(alice.call("GET", f"directory/room/{quote(name)}"))["room_id"] == new
    canonical = ok(alice.call("GET", room_path(new, "state", "m.room.canonical_alias", "")))
    assert canonical == {"alias": alias, "alt_aliases": [extra]}
    assert ok(alice.call("GET", room_path(room, "state", "m.room.canonical_alias", ""))) == {}
    assert ok(alice.call("GET", f"directory/list/room/{quote(new)}")) == {"visibility": "public"}
    assert ok(alice.call("GET", f"directory/list/room/{quote(room)}")) == {"visibility": "private"}
