"""/sync's caches over HTTP (one real process): what the events stream invalidates is seen
on the very next sync. Membership history is cached per user and which rooms moved is
remembered per room; history visibility is read per event from the state at it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.matrix import MatrixClient, ok, quote
from tests.harness.single import SingleServer, single_server

LAZY = {"room": {"timeline": {"limit": 10}, "state": {"lazy_load_members": True}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleServer]:
    with single_server(tmp_path_factory.mktemp("sync-caches")) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_server_errors(server: SingleServer) -> Iterator[None]:
    with server.logs_no_new_errors():
        yield


def sync(client: MatrixClient, since: str | None = None, **params: Any) -> dict[str, Any]:
    query: dict[str, Any] = {"timeout": 0, "filter": json.dumps(LAZY)}
    if since is not None:
        query["since"] = since
    query.update(params)
    body: dict[str, Any] = ok(client.call("GET", "sync", params=query, timeout=60))
    return body


def bodies(room: dict[str, Any]) -> list[str]:
    return [e["content"]["body"] for e in room["timeline"]["events"] if "body" in e["content"]]


def set_visibility(client: MatrixClient, room_id: str, value: str) -> None:
    path = f"rooms/{quote(room_id)}/state/m.room.history_visibility"
    ok(client.call("PUT", path, {"history_visibility": value}))


def test_membership_changes_are_seen_on_the_next_sync(server: SingleServer) -> None:
    alice, bob = server.new_user("a"), server.new_user("b")
    first_room = str(ok(alice.create_room(preset="public_chat"))["room_id"])
    ok(bob.join(first_room))
    start = sync(bob)
    assert list(start["rooms"]["join"]) == [first_room]
    quiet = sync(bob, start["next_batch"])  # served from the cached membership history
    assert quiet["rooms"]["join"] == {}

    second_room = str(ok(alice.create_room(preset="public_chat"))["room_id"])
    ok(alice.send_text(second_room, "before bob"))
    ok(bob.join(second_room))
    joined = sync(bob, quiet["next_batch"])
    assert list(joined["rooms"]["join"]) == [second_room]
    assert bodies(joined["rooms"]["join"][second_room]) == ["before bob"]

    ok(bob.call("POST", f"rooms/{quote(first_room)}/leave", {}))
    left = sync(bob, joined["next_batch"])
    assert list(left["rooms"]["leave"]) == [first_room] and left["rooms"]["join"] == {}
    # Messages in the room left no longer reach bob.
    ok(alice.send_text(first_room, "after bob left"))
    ok(alice.send_text(second_room, "still here"))
    after = sync(bob, left["next_batch"])
    assert list(after["rooms"]["join"]) == [second_room] and after["rooms"]["leave"] == {}


def test_history_visibility_changes_are_seen_on_the_next_sync(server: SingleServer) -> None:
    alice, bob, carol = server.new_user("a"), server.new_user("b"), server.new_user("c")
    room_id = str(ok(alice.create_room(preset="public_chat"))["room_id"])
    set_visibility(alice, room_id, "joined")
    ok(alice.send_text(room_id, "members only"))
    ok(bob.join(room_id))
    first = sync(bob)
    assert "members only" not in bodies(first["rooms"]["join"][room_id])

    set_visibility(alice, room_id, "shared")
    ok(alice.send_text(room_id, "shared from now"))
    later = sync(bob, first["next_batch"])["rooms"]["join"][room_id]
    assert bodies(later) == ["shared from now"]
    ok(carol.join(room_id))
    seen = bodies(sync(carol)["rooms"]["join"][room_id])
    assert "shared from now" in seen and "members only" not in seen

    set_visibility(alice, room_id, "joined")
    ok(alice.send_text(room_id, "members only again"))
    dave = server.new_user("d")
    ok(dave.join(room_id))
    seen = bodies(sync(dave)["rooms"]["join"][room_id])
    assert "members only again" not in seen and "shared from now" in seen
