"""Property: incremental /sync composes. Random actions by several users across rooms
(send, state change, join, leave, invite) run against a real single process, SQLite and
PostgreSQL. Each user keeps a view built from an initial sync plus every incremental sync
applied in order, taken at random points; at each of those points the view must equal a
fresh initial sync's, for timelines (the limit is large enough never to cut), state and
membership (joined, invited and left rooms).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness.matrix import MatrixClient, ok, quote
from tests.harness.postgres import PostgresServer, dbname_of
from tests.harness.single import SingleServer, single_server

USERS = 3
ROOMS = 2
FILTER = {"room": {"timeline": {"limit": 1000}, "include_leave": True}}
# Per user: an initial sync, then incremental ones at the points the test chooses.
ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, USERS - 1), st.integers(0, ROOMS - 1)),
        st.tuples(
            st.just("state"),
            st.integers(0, USERS - 1),
            st.integers(0, ROOMS - 1),
            st.sampled_from(["", "a", "b"]),
        ),
        st.tuples(st.just("join"), st.integers(0, USERS - 1), st.integers(0, ROOMS - 1)),
        st.tuples(st.just("leave"), st.integers(0, USERS - 1), st.integers(0, ROOMS - 1)),
        st.tuples(
            st.just("invite"),
            st.integers(0, USERS - 1),
            st.integers(0, ROOMS - 1),
            st.integers(0, USERS - 1),
        ),
        st.tuples(st.just("sync"), st.integers(0, USERS - 1)),
    ),
    min_size=4,
    max_size=24,
)


@attrs.define
class RoomView:
    state: dict[tuple[str, str], str] = attrs.field(factory=dict)
    timeline: list[str] = attrs.field(factory=list)


@attrs.define
class View:
    """What a client following the spec's rules knows after applying sync responses."""

    user_id: str
    join: dict[str, RoomView] = attrs.field(factory=dict)
    invite: dict[str, frozenset[tuple[str, str]]] = attrs.field(factory=dict)
    leave: set[str] = attrs.field(factory=set)

    def apply(self, body: dict[str, Any]) -> None:
        rooms = body["rooms"]
        for room_id, data in rooms["join"].items():
            timeline = data["timeline"]["events"]
            # A join room is new to the client when it was not joined, when the timeline
            # was cut, or when the user left and rejoined within the window.
            rejoined = any(
                e["type"] == "m.room.member"
                and e.get("state_key") == self.user_id
                and e["content"].get("membership") in ("leave", "ban")
                for e in timeline
            )
            view = self.join.get(room_id)
            if view is None or data["timeline"]["limited"] or rejoined:
                view = RoomView()
            self.join[room_id] = view
            self.invite.pop(room_id, None)
            self.leave.discard(room_id)
            for event in data["state"]["events"]:
                view.state[(event["type"], event["state_key"])] = event["event_id"]
            for event in timeline:
                view.timeline.append(event["event_id"])
                if "state_key" in event:
                    view.state[(event["type"], event["state_key"])] = event["event_id"]
        for room_id, data in rooms["invite"].items():
            self.invite[room_id] = frozenset(
                (e["type"], e["state_key"]) for e in data["invite_state"]["events"]
            )
            self.join.pop(room_id, None)
            self.leave.discard(room_id)
        for room_id in rooms["leave"]:
            self.join.pop(room_id, None)
            self.invite.pop(room_id, None)
            self.leave.add(room_id)


def _sync(client: MatrixClient, since: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"timeout": 0, "filter": FILTER}
    if since is not None:
        params["since"] = since
    body: dict[str, Any] = ok(client.call("GET", "sync", params=params))
    return body


@attrs.define
class Follower:
    client: MatrixClient
    view: View
    since: str

    def catch_up(self) -> None:
        body = _sync(self.client, self.since)
        self.view.apply(body)
        self.since = body["next_batch"]

    def check(self) -> None:
        fresh = View(self.view.user_id)
        fresh.apply(_sync(self.client, None))
        assert set(self.view.join) == set(fresh.join), "joined rooms differ"
        for room_id, room in fresh.join.items():
            mine = self.view.join[room_id]
            assert mine.state == room.state, f"state of {room_id} differs"
            assert mine.timeline == room.timeline, f"timeline of {room_id} differs"
        assert self.view.invite == fresh.invite, "invites differ"
        assert self.view.leave == fresh.leave, "left rooms differ"


def run_scenario(server: SingleServer, actions: list[tuple[Any, ...]]) -> None:
    clients = [server.new_user("p") for _ in range(USERS)]
    room_ids = [
        ok(clients[0].create_room(preset="public_chat", name=f"r{i}"))["room_id"]
        for i in range(ROOMS)
    ]
    followers = []
    for client in clients:
        first = _sync(client, None)
        view = View(client.user_id or "")
        view.apply(first)
        followers.append(Follower(client, view, first["next_batch"]))

    for action in actions:
        kind, actor = action[0], clients[action[1]]
        if kind == "sync":
            follower = followers[action[1]]
            follower.catch_up()
            follower.check()
            continue
        room_id = room_ids[action[2]]
        if kind == "send":
            actor.send_text(room_id, f"msg {uuid.uuid4().hex[:6]}")
        elif kind == "state":
            actor.call(
                "PUT",
                f"rooms/{quote(room_id)}/state/org.example.s/{quote(action[3])}",
                {"v": uuid.uuid4().hex},
            )
        elif kind == "join":
            actor.join(room_id)
        elif kind == "leave":
            actor.call("POST", f"rooms/{quote(room_id)}/leave", {})
        elif kind == "invite":
            actor.call(
                "POST", f"rooms/{quote(room_id)}/invite", {"user_id": clients[action[3]].user_id}
            )
        # Failures (e.g. sending while not joined) are part of the game: nothing changes.
    for follower in followers:
        follower.catch_up()
        follower.check()


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleServer]:
    with single_server(tmp_path_factory.mktemp("sync-property")) as srv:
        yield srv


@pytest.fixture(scope="module")
def postgres_server(
    tmp_path_factory: pytest.TempPathFactory, pg_server: PostgresServer
) -> Iterator[SingleServer]:
    dsn = pg_server.fresh_database()
    try:
        with single_server(tmp_path_factory.mktemp("sync-property-pg"), postgres_dsn=dsn) as srv:
            yield srv
    finally:
        pg_server.drop_database(dbname_of(dsn))


SETTINGS = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(actions=ACTIONS)
def test_incremental_syncs_compose_sqlite(
    sqlite_server: SingleServer, actions: list[tuple[Any, ...]]
) -> None:
    run_scenario(sqlite_server, actions)
    assert sqlite_server.new_errors() == []


@pytest.mark.postgres
@SETTINGS
@given(actions=ACTIONS)
def test_incremental_syncs_compose_postgres(
    postgres_server: SingleServer, actions: list[tuple[Any, ...]]
) -> None:
    run_scenario(postgres_server, actions)
    assert postgres_server.new_errors() == []


def test_views_detect_a_difference() -> None:
    """The comparison can fail: a view missing one timeline event is not a fresh one."""
    view = View("@u:x")
    body = {
        "rooms": {
            "join": {
                "!r": {
                    "timeline": {
                        "events": [{"event_id": "$1", "type": "m.room.message", "content": {}}],
                        "limited": False,
                    },
                    "state": {"events": []},
                }
            },
            "invite": {},
            "leave": {},
        }
    }
    view.apply(body)
    other = View("@u:x")
    body["rooms"]["join"]["!r"]["timeline"]["events"] = []  # type: ignore[index]
    other.apply(body)
    assert view.join["!r"].timeline != other.join["!r"].timeline
