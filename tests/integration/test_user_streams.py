"""Typing, receipts, read markers, presence, account data, tags and send-to-device against a
real single Ganglion process over HTTP (SQLite), as clients see them in /sync.

One `ganglion run` per module with `limits.max_to_device_per_sync` lowered to
TO_DEVICE_LIMIT (so a queue longer than one response is exercised) and a second one with
`presence.enabled: false`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from homeserver.sync.tokens import StreamToken
from tests.harness.matrix import MatrixClient, ok, quote, request
from tests.harness.ports import free_port
from tests.harness.single import SingleServer, single_server
from tests.harness.waiting import wait_until

TO_DEVICE_LIMIT = 3


def _streams_config(config: dict[str, Any]) -> None:
    config["limits"]["max_to_device_per_sync"] = TO_DEVICE_LIMIT
    config["main"]["replication_listen"] = f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleServer]:
    with single_server(tmp_path_factory.mktemp("streams"), tweak=_streams_config) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_internal_errors(server: SingleServer) -> Iterator[None]:
    with server.logs_no_new_errors():
        yield


def err(result: tuple[int, Any], status: int, errcode: str) -> None:
    assert result[0] == status, result
    assert result[1]["errcode"] == errcode, result


@attrs.define
class Room:
    alice: MatrixClient
    bob: MatrixClient
    room_id: str
    event_ids: list[str]


@pytest.fixture
def room(server: SingleServer) -> Room:
    """alice and bob, both joined to a fresh room with three messages from alice."""
    alice, bob = server.new_user("alice"), server.new_user("bob")
    room_id = ok(alice.create_room(preset="public_chat"))["room_id"]
    ok(bob.join(room_id))
    event_ids = [ok(alice.send_text(room_id, f"message {i}"))["event_id"] for i in range(3)]
    return Room(alice, bob, room_id, event_ids)


def ephemeral(sync: dict[str, Any], room_id: str, event_type: str) -> list[dict[str, Any]]:
    joined = sync["rooms"]["join"].get(room_id, {})
    return [e for e in joined.get("ephemeral", {}).get("events", []) if e["type"] == event_type]


def room_account_data(sync: dict[str, Any], room_id: str) -> dict[str, Any]:
    joined = sync["rooms"]["join"].get(room_id, {})
    return {e["type"]: e["content"] for e in joined.get("account_data", {}).get("events", [])}


def global_account_data(sync: dict[str, Any]) -> dict[str, Any]:
    return {e["type"]: e["content"] for e in sync.get("account_data", {}).get("events", [])}


def to_device(sync: dict[str, Any]) -> list[dict[str, Any]]:
    return list(sync.get("to_device", {}).get("events", []))


class LongPoll:
    """A /sync long-poll running in a thread; `result()` waits for its answer."""

    def __init__(self, client: MatrixClient, since: str, timeout_ms: int = 20_000) -> None:
        self.started = time.monotonic()
        self.answer: tuple[int, Any] | None = None
        self.elapsed = 0.0
        self._thread = threading.Thread(target=self._run, args=(client, since, timeout_ms))
        self._thread.start()

    def _run(self, client: MatrixClient, since: str, timeout_ms: int) -> None:
        self.answer = client.sync(since=since, timeout_ms=timeout_ms)
        self.elapsed = time.monotonic() - self.started

    def result(self) -> dict[str, Any]:
        self._thread.join(60)
        assert self.answer is not None
        return dict(ok(self.answer))


def poll_until(
    client: MatrixClient, since: str, found: Callable[[dict[str, Any]], bool], timeout: float = 15
) -> tuple[dict[str, Any], str]:
    """Syncs from `since` until a response satisfies `found`; returns it and its token."""
    seen: dict[str, Any] = {}

    def check() -> bool:
        nonlocal since
        resp = ok(client.sync(since=since, timeout_ms=1000))
        since = resp["next_batch"]
        if found(resp):
            seen["resp"] = resp
            return True
        return False

    wait_until(check, timeout, 0.05, description="a /sync response with the expected data")
    return seen["resp"], since


# -- typing ---------------------------------------------------------------------------------


def test_typing_wakes_the_other_members_long_poll_and_stops(
    server: SingleServer, room: Room
) -> None:
    since = ok(room.bob.sync())["next_batch"]
    poll = LongPoll(room.bob, since)
    server.wait_for_waiting_listeners(1)
    path = f"rooms/{quote(room.room_id)}/typing/{quote(room.alice.user_id or '')}"
    ok(room.alice.call("PUT", path, {"typing": True, "timeout": 30_000}))
    resp = poll.result()
    assert poll.elapsed < 10
    assert ephemeral(resp, room.room_id, "m.typing") == [
        {"type": "m.typing", "content": {"user_ids": [room.alice.user_id]}}
    ]
    # A refresh changes nothing visible; stopping does.
    ok(room.alice.call("PUT", path, {"typing": True, "timeout": 30_000}))
    ok(room.alice.call("PUT", path, {"typing": False}))
    later, _ = poll_until(
        room.bob, resp["next_batch"], lambda r: bool(ephemeral(r, room.room_id, "m.typing"))
    )
    assert ephemeral(later, room.room_id, "m.typing")[0]["content"] == {"user_ids": []}
    # An initial sync shows who types now: nobody.
    assert ephemeral(ok(room.bob.sync()), room.room_id, "m.typing") == []


def test_typing_expires_after_its_timeout(room: Room) -> None:
    since = ok(room.bob.sync())["next_batch"]
    path = f"rooms/{quote(room.room_id)}/typing/{quote(room.alice.user_id or '')}"
    ok(room.alice.call("PUT", path, {"typing": True, "timeout": 400}))
    first, since = poll_until(
        room.bob, since, lambda r: bool(ephemeral(r, room.room_id, "m.typing"))
    )
    assert ephemeral(first, room.room_id, "m.typing")[0]["content"]["user_ids"] == [
        room.alice.user_id
    ]
    expired, _ = poll_until(room.bob, since, lambda r: bool(ephemeral(r, room.room_id, "m.typing")))
    assert ephemeral(expired, room.room_id, "m.typing")[0]["content"]["user_ids"] == []


def test_typing_rejects_others_and_bad_bodies(server: SingleServer, room: Room) -> None:
    alice_path = f"rooms/{quote(room.room_id)}/typing/{quote(room.alice.user_id or '')}"
    err(room.bob.call("PUT", alice_path, {"typing": True}), 403, "M_FORBIDDEN")
    err(room.alice.call("PUT", alice_path, {"typing": "yes"}), 400, "M_BAD_JSON")
    err(room.alice.call("PUT", alice_path, {}), 400, "M_MISSING_PARAM")
    err(room.alice.call("PUT", alice_path, {"typing": True, "timeout": -1}), 400, "M_BAD_JSON")
    outsider = server.new_user("carol")
    path = f"rooms/{quote(room.room_id)}/typing/{quote(outsider.user_id or '')}"
    err(outsider.call("PUT", path, {"typing": True, "timeout": 1000}), 403, "M_FORBIDDEN")


# -- receipts and read markers -------------------------------------------------------------


def receipt_path(room: Room, receipt_type: str, event_id: str) -> str:
    return f"rooms/{quote(room.room_id)}/receipt/{receipt_type}/{quote(event_id)}"


def test_public_receipts_reach_others_and_private_ones_only_their_owner(room: Room) -> None:
    a_since = ok(room.alice.sync())["next_batch"]
    latest = room.event_ids[-1]
    ok(room.bob.call("POST", receipt_path(room, "m.read.private", latest), {}))
    ok(room.bob.call("POST", receipt_path(room, "m.read", room.event_ids[0]), {}))

    a_resp, _ = poll_until(
        room.alice, a_since, lambda r: bool(ephemeral(r, room.room_id, "m.receipt"))
    )
    content = ephemeral(a_resp, room.room_id, "m.receipt")[0]["content"]
    assert list(content) == [room.event_ids[0]]
    assert set(content[room.event_ids[0]]) == {"m.read"}
    assert isinstance(content[room.event_ids[0]]["m.read"][room.bob.user_id]["ts"], int)
    # Alice's initial sync: bob's public receipt only.
    initial = ephemeral(ok(room.alice.sync()), room.room_id, "m.receipt")
    assert "m.read.private" not in str(initial)
    # Bob's own initial sync has both.
    mine = ephemeral(ok(room.bob.sync()), room.room_id, "m.receipt")[0]["content"]
    assert mine[latest]["m.read.private"][room.bob.user_id]["ts"] > 0
    assert room.bob.user_id in mine[room.event_ids[0]]["m.read"]


def test_receipts_never_move_backwards_and_threads_are_separate(room: Room) -> None:
    first, last = room.event_ids[0], room.event_ids[-1]
    ok(room.bob.call("POST", receipt_path(room, "m.read", last), {}))
    ok(room.bob.call("POST", receipt_path(room, "m.read", first), {}))
    ok(room.bob.call("POST", receipt_path(room, "m.read", first), {"thread_id": "main"}))
    events = ephemeral(ok(room.alice.sync()), room.room_id, "m.receipt")
    by_thread = {}
    for e in events:
        for event_id, types in e["content"].items():
            data = types["m.read"][room.bob.user_id]
            by_thread[data.get("thread_id")] = event_id
    assert by_thread == {None: last, "main": first}


def test_receipt_errors(server: SingleServer, room: Room) -> None:
    event_id = room.event_ids[0]
    err(room.bob.call("POST", receipt_path(room, "m.nope", event_id), {}), 400, "M_INVALID_PARAM")
    err(
        room.bob.call("POST", receipt_path(room, "m.read", event_id), {"thread_id": ""}),
        400,
        "M_INVALID_PARAM",
    )
    err(
        room.bob.call("POST", receipt_path(room, "m.read", event_id), {"thread_id": 5}),
        400,
        "M_INVALID_PARAM",
    )
    err(
        room.bob.call("POST", receipt_path(room, "m.fully_read", event_id), {"thread_id": "main"}),
        400,
        "M_INVALID_PARAM",
    )
    err(room.bob.call("POST", receipt_path(room, "m.read", "$nope"), {}), 404, "M_NOT_FOUND")
    outsider = server.new_user("carol")
    err(outsider.call("POST", receipt_path(room, "m.read", event_id), {}), 403, "M_FORBIDDEN")
    assert ephemeral(ok(room.alice.sync()), room.room_id, "m.receipt") == []


def test_read_markers_set_fully_read_and_receipts(room: Room) -> None:
    since = ok(room.bob.sync())["next_batch"]
    path = f"rooms/{quote(room.room_id)}/read_markers"
    marker, read = room.event_ids[1], room.event_ids[2]
    # A bad event ID anywhere changes nothing.
    err(
        room.bob.call("POST", path, {"m.fully_read": marker, "m.read": "$missing"}),
        404,
        "M_NOT_FOUND",
    )
    err(room.bob.call("POST", path, {"m.fully_read": 7}), 400, "M_BAD_JSON")
    ad_path = f"user/{quote(room.bob.user_id or '')}/rooms/{quote(room.room_id)}/account_data"
    err(room.bob.call("GET", f"{ad_path}/m.fully_read"), 404, "M_NOT_FOUND")

    ok(room.bob.call("POST", path, {"m.fully_read": marker, "m.read": read}))
    assert ok(room.bob.call("GET", f"{ad_path}/m.fully_read")) == {"event_id": marker}
    resp, _ = poll_until(room.bob, since, lambda r: bool(room_account_data(r, room.room_id)))
    assert room_account_data(resp, room.room_id) == {"m.fully_read": {"event_id": marker}}
    receipts = ephemeral(ok(room.alice.sync()), room.room_id, "m.receipt")
    assert receipts and room.bob.user_id in receipts[0]["content"][read]["m.read"]
    # The receipt endpoint's m.fully_read is the read marker.
    ok(room.bob.call("POST", receipt_path(room, "m.fully_read", read), {}))
    assert ok(room.bob.call("GET", f"{ad_path}/m.fully_read")) == {"event_id": read}
    # Clients may not set it directly.
    err(room.bob.call("PUT", f"{ad_path}/m.fully_read", {"event_id": marker}), 405, "M_BAD_JSON")


# -- account data and tags ------------------------------------------------------------------


def test_account_data_global_and_per_room(server: SingleServer, room: Room) -> None:
    alice = room.alice
    me = quote(alice.user_id or "")
    initial = ok(alice.sync())
    since = initial["next_batch"]
    err(alice.call("GET", f"user/{me}/account_data/org.example.x"), 404, "M_NOT_FOUND")

    poll = LongPoll(alice, since)
    server.wait_for_waiting_listeners(1)
    ok(alice.call("PUT", f"user/{me}/account_data/org.example.x", {"a": 1}))
    resp = poll.result()
    assert poll.elapsed < 10
    assert global_account_data(resp) == {"org.example.x": {"a": 1}}
    assert ok(alice.call("GET", f"user/{me}/account_data/org.example.x")) == {"a": 1}

    room_path = f"user/{me}/rooms/{quote(room.room_id)}/account_data/org.example.y"
    ok(alice.call("PUT", room_path, {"b": 2}))
    ok(alice.call("PUT", f"user/{me}/account_data/org.example.x", {"a": 3}))
    nxt, _ = poll_until(alice, resp["next_batch"], lambda r: bool(global_account_data(r)))
    assert global_account_data(nxt) == {"org.example.x": {"a": 3}}
    assert room_account_data(nxt, room.room_id) == {"org.example.y": {"b": 2}}
    assert ok(alice.call("GET", room_path)) == {"b": 2}
    # Initial sync: everything, latest values.
    full = ok(alice.sync())
    assert global_account_data(full)["org.example.x"] == {"a": 3}
    assert room_account_data(full, room.room_id)["org.example.y"] == {"b": 2}

    # Only one's own; valid room IDs; JSON objects; server-managed types refused.
    other = quote(room.bob.user_id or "")
    err(alice.call("GET", f"user/{other}/account_data/org.example.x"), 403, "M_FORBIDDEN")
    err(alice.call("PUT", f"user/{other}/account_data/org.example.x", {}), 403, "M_FORBIDDEN")
    err(
        alice.call("PUT", f"user/{me}/rooms/notaroom/account_data/org.example.y", {}),
        400,
        "M_INVALID_PARAM",
    )
    err(alice.call("PUT", f"user/{me}/account_data/org.example.x", [1]), 400, "M_NOT_JSON")
    err(alice.call("PUT", f"user/{me}/account_data/m.push_rules", {}), 405, "M_BAD_JSON")
    assert ok(alice.call("GET", f"user/{me}/account_data/org.example.x")) == {"a": 3}


def test_tags(room: Room) -> None:
    bob = room.bob
    base = f"user/{quote(bob.user_id or '')}/rooms/{quote(room.room_id)}/tags"
    since = ok(bob.sync())["next_batch"]
    assert ok(bob.call("GET", base)) == {"tags": {}}
    ok(bob.call("PUT", f"{base}/m.favourite", {"order": 0.25}))
    ok(bob.call("PUT", f"{base}/u.work", {}))
    assert ok(bob.call("GET", base)) == {"tags": {"m.favourite": {"order": 0.25}, "u.work": {}}}
    resp, since = poll_until(bob, since, lambda r: "m.tag" in room_account_data(r, room.room_id))
    assert room_account_data(resp, room.room_id)["m.tag"]["tags"]["m.favourite"] == {"order": 0.25}
    ok(bob.call("DELETE", f"{base}/m.favourite"))
    ok(bob.call("DELETE", f"{base}/m.nothing"))
    assert ok(bob.call("GET", base)) == {"tags": {"u.work": {}}}
    resp, _ = poll_until(bob, since, lambda r: "m.tag" in room_account_data(r, room.room_id))
    assert room_account_data(resp, room.room_id)["m.tag"] == {"tags": {"u.work": {}}}
    err(bob.call("PUT", f"{base}/u.bad", {"order": "first"}), 400, "M_BAD_JSON")
    err(bob.call("PUT", f"{base}/{'x' * 256}", {}), 400, "M_INVALID_PARAM")
    other = f"user/{quote(room.alice.user_id or '')}/rooms/{quote(room.room_id)}/tags"
    err(bob.call("GET", other), 403, "M_FORBIDDEN")
    assert ok(bob.call("GET", base)) == {"tags": {"u.work": {}}}


# -- presence -------------------------------------------------------------------------------


def test_presence_set_get_and_sync(server: SingleServer, room: Room) -> None:
    alice, bob = room.alice, room.bob
    since = ok(bob.sync())["next_batch"]
    path = f"presence/{quote(alice.user_id or '')}/status"
    ok(alice.call("PUT", path, {"presence": "unavailable", "status_msg": "lunch"}))
    got = ok(bob.call("GET", path))
    assert got["presence"] == "unavailable"
    assert got["status_msg"] == "lunch"
    assert isinstance(got["last_active_ago"], int)

    def alice_presence(r: dict[str, Any]) -> bool:
        return any(
            e["sender"] == alice.user_id and e["content"].get("status_msg") == "lunch"
            for e in r.get("presence", {}).get("events", [])
        )

    resp, _ = poll_until(bob, since, alice_presence)
    event = next(e for e in resp["presence"]["events"] if e["sender"] == alice.user_id)
    assert event["type"] == "m.presence"
    assert event["content"]["presence"] == "unavailable"

    ok(alice.call("PUT", path, {"presence": "online"}))
    got = ok(alice.call("GET", path))
    assert got["presence"] == "online" and got["currently_active"] is True
    assert "status_msg" not in got

    outsider = server.new_user("carol")
    err(outsider.call("GET", path), 403, "M_FORBIDDEN")
    err(bob.call("PUT", path, {"presence": "online"}), 403, "M_FORBIDDEN")
    err(alice.call("PUT", path, {"presence": "asleep"}), 400, "M_INVALID_PARAM")
    err(alice.call("PUT", path, {}), 400, "M_MISSING_PARAM")
    err(alice.call("PUT", path, {"presence": "online", "status_msg": 3}), 400, "M_BAD_JSON")


def test_syncing_marks_a_user_online(server: SingleServer) -> None:
    carol = server.new_user("carol")
    path = f"presence/{quote(carol.user_id or '')}/status"
    assert ok(carol.call("GET", path))["presence"] == "offline"
    ok(carol.sync())
    assert ok(carol.call("GET", path))["presence"] == "online"


def _presence_off(config: dict[str, Any]) -> None:
    config.setdefault("presence", {})["enabled"] = False


def test_presence_can_be_switched_off(tmp_path: Path) -> None:
    with single_server(tmp_path / "nopresence", tweak=_presence_off) as srv:
        alice = srv.new_user("alice")
        path = f"presence/{quote(alice.user_id or '')}/status"
        ok(alice.call("PUT", path, {"presence": "online", "status_msg": "here"}))
        assert ok(alice.call("GET", path)) == {"presence": "offline"}
        assert ok(alice.sync()).get("presence", {}).get("events", []) == []
        assert srv.new_errors() == []


# -- send-to-device --------------------------------------------------------------------------


def test_to_device_delivery_acknowledgement_and_txn_ids(server: SingleServer) -> None:
    alice = server.new_user("alice")
    bob = server.new_user("bob")
    bob2 = MatrixClient(server.base_url)
    ok(bob2.login((bob.user_id or "")[1:].split(":")[0]))
    assert bob2.device_id != bob.device_id
    b1 = ok(bob.sync())["next_batch"]
    b2 = ok(bob2.sync())["next_batch"]

    poll = LongPoll(bob, b1)
    server.wait_for_waiting_listeners(1)
    body = {"messages": {bob.user_id: {bob.device_id: {"n": 1}}}}
    ok(alice.call("PUT", "sendToDevice/org.example.ping/t1", body))
    ok(alice.call("PUT", "sendToDevice/org.example.ping/t1", body))  # retry: not sent again
    first = poll.result()
    assert poll.elapsed < 10
    assert to_device(first) == [
        {"sender": alice.user_id, "type": "org.example.ping", "content": {"n": 1}}
    ]
    # Acknowledged by the next since: gone, also from an initial sync.
    again = ok(bob.sync(since=first["next_batch"]))
    assert to_device(again) == []
    assert to_device(ok(bob.sync())) == []

    # "*" reaches every device of the user; a new txn ID is a new message.
    ok(
        alice.call(
            "PUT", "sendToDevice/org.example.ping/t2", {"messages": {bob.user_id: {"*": {"n": 2}}}}
        )
    )
    got1, _ = poll_until(bob, again["next_batch"], lambda r: bool(to_device(r)))
    got2, _ = poll_until(bob2, b2, lambda r: bool(to_device(r)))
    assert [e["content"] for e in to_device(got1)] == [{"n": 2}]
    assert [e["content"] for e in to_device(got2)] == [{"n": 2}]

    err(alice.call("PUT", "sendToDevice/x/t3", {}), 400, "M_MISSING_PARAM")
    err(alice.call("PUT", "sendToDevice/x/t3", {"messages": {bob.user_id: []}}), 400, "M_BAD_JSON")


def test_a_long_to_device_queue_arrives_over_several_syncs(server: SingleServer) -> None:
    alice, bob = server.new_user("alice"), server.new_user("bob")
    since = ok(bob.sync())["next_batch"]
    total = TO_DEVICE_LIMIT * 2 + 1
    for i in range(total):
        body = {"messages": {bob.user_id: {bob.device_id: {"n": i}}}}
        ok(alice.call("PUT", f"sendToDevice/org.example.seq/q{i}", body))
    received: list[int] = []
    for _ in range(total):
        resp = ok(bob.sync(since=since))
        batch = [e["content"]["n"] for e in to_device(resp)]
        assert len(batch) <= TO_DEVICE_LIMIT
        received += batch
        since = resp["next_batch"]
        if not batch:
            break
    assert received == list(range(total))
    # Retrying a token whose response was cut short repeats only what it did not deliver.
    assert to_device(ok(bob.sync(since=since))) == []


# -- the replication rows endpoint (typing's followers read the writer's memory) -----------


def test_the_writer_serves_typing_rows_to_replication_clients_only(
    server: SingleServer, room: Room
) -> None:
    path = f"rooms/{quote(room.room_id)}/typing/{quote(room.alice.user_id or '')}"
    ok(room.alice.call("PUT", path, {"typing": True, "timeout": 30_000}))
    assert server.replication_url is not None
    url = server.replication_url + "/_ganglion/replication/rows/typing?after=0"
    status, body = request("GET", url, access_token=server.replication_secret)
    assert status == 200, body
    rows = body["rows"]
    # The first writer of a fresh database has no predecessor whose rows must be reset.
    assert not any(r.get("reset") for r in rows)
    mine = [r for r in rows if r.get("room_id") == room.room_id]
    assert mine and mine[0]["user_ids"] == [room.alice.user_id]
    newest = body["positions"]["typing"]
    status, body = request(
        "GET", url.replace("after=0", f"after={newest}"), access_token=server.replication_secret
    )
    assert (status, body["rows"]) == (200, [])

    assert request("GET", url, access_token="wrong")[0] == 403
    assert request("GET", url)[0] == 403
    status, body = request(
        "GET",
        server.replication_url + "/_ganglion/replication/rows/receipts?after=0",
        access_token=server.replication_secret,
    )
    assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")
    status, body = request("GET", url + "x", access_token=server.replication_secret)
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


def test_typing_positions_stay_small_and_keep_growing_across_restarts(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with single_server(tmp_path_factory.mktemp("typing-restart")) as srv:
        alice = srv.new_user("alice")
        room_id = ok(alice.call("POST", "createRoom", {}))["room_id"]
        path = f"rooms/{quote(room_id)}/typing/{quote(alice.user_id or '')}"

        def typing_position() -> int:
            token = ok(alice.call("GET", "sync", params={"timeout": "0"}))["next_batch"]
            fields = StreamToken.decode(token)
            return fields.typing

        ok(alice.call("PUT", path, {"typing": True, "timeout": 30_000}))
        before = typing_position()
        assert 0 < before < 10_000  # small numbers keep sync tokens short
        srv.process.restart()
        ok(alice.call("PUT", path, {"typing": True, "timeout": 30_000}))
        after = typing_position()
        # Every position handed out before the restart stays below the new ones.
        assert before < after < before + 10_000
