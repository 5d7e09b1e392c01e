"""Guest access over HTTP against one real Ganglion process (SQLite), guests enabled.

Registration (`kind=guest`) on and off; the API subset: every route the router has is
tried with a guest's token, and each answers 403 M_GUEST_ACCESS_FORBIDDEN unless it is
one of the guest routes; joins by `m.room.guest_access`, and guests made to leave when a
room stops allowing them; world-readable rooms read without joining; guests in /sync;
upgrading a guest to a full account. After every test the server has logged no internal
error.
"""

from __future__ import annotations

import importlib
import re
import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest

from homeserver.handlers.guest_access import guest_may_request
from homeserver.http.server import Route, Router
from homeserver.rest import API_MODULES
from tests.harness.matrix import MatrixClient, ok, quote, request
from tests.harness.single import PASSWORD, SingleServer, single_server
from workers.config import load_config

GUEST_FORBIDDEN = (403, "M_GUEST_ACCESS_FORBIDDEN")


def _allow_guests(config: dict[str, Any]) -> None:
    config["allow_guest_access"] = True


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleServer]:
    with single_server(tmp_path_factory.mktemp("guests"), tweak=_allow_guests) as srv:
        yield srv


@pytest.fixture(scope="module")
def no_guest_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleServer]:
    # Generated defaults: guests off, registration closed.
    with single_server(tmp_path_factory.mktemp("noguests"), open_registration=False) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_internal_errors(server: SingleServer) -> Iterator[None]:
    with server.logs_no_new_errors():
        yield


def err(result: tuple[int, Any], status: int, errcode: str) -> None:
    got, body = result
    assert (got, body.get("errcode") if isinstance(body, dict) else body) == (status, errcode), body
    assert isinstance(body.get("error"), str)


def register_guest(srv: SingleServer, body: Any = None) -> tuple[int, Any]:
    return request("POST", srv.url("register?kind=guest"), {} if body is None else body)


def new_guest(srv: SingleServer) -> MatrixClient:
    body = ok(register_guest(srv))
    client = MatrixClient(srv.base_url, body["access_token"])
    client.user_id, client.device_id = body["user_id"], body["device_id"]
    return client


def room_path(room_id: str, *rest: str) -> str:
    return "/".join([f"rooms/{quote(room_id)}", *(quote(r) for r in rest)])


def guest_access_state(value: str) -> dict[str, Any]:
    return {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": value}}


def history_state(value: str) -> dict[str, Any]:
    return {
        "type": "m.room.history_visibility",
        "state_key": "",
        "content": {"history_visibility": value},
    }


def new_room(owner: MatrixClient, *initial_state: dict[str, Any], **body: Any) -> str:
    room_id: str = ok(
        owner.create_room(preset="public_chat", initial_state=list(initial_state), **body)
    )["room_id"]
    return room_id


def membership_of(client: MatrixClient, room_id: str, user_id: str) -> str | None:
    status, body = client.call("GET", room_path(room_id, "state", "m.room.member", user_id))
    return body.get("membership") if status == 200 else None


# ------------------------------------------------------------------ registration --


def test_guest_registration_ignores_the_body_but_the_display_name(server: SingleServer) -> None:
    body = ok(
        register_guest(
            server,
            {
                "username": "wanted",
                "password": 12,  # ignored, even with the wrong type
                "device_id": "CHOSEN",
                "initial_device_display_name": "Guest phone",
                "auth": {"type": "m.login.bogus"},
            },
        )
    )
    assert body["user_id"] != "@wanted:localhost" and body["user_id"].endswith(":localhost")
    assert body["device_id"] and body["device_id"] != "CHOSEN"
    assert body["access_token"]
    assert server.query(
        "SELECT u.is_guest, u.password_hash, d.device_id, d.display_name FROM users u"
        " JOIN devices d ON d.user_id = u.user_id WHERE u.user_id = ?",
        (body["user_id"],),
    ) == [(1, None, body["device_id"], "Guest phone")]

    guest = MatrixClient(server.base_url, body["access_token"])
    assert ok(guest.whoami()) == {
        "user_id": body["user_id"],
        "device_id": body["device_id"],
        "is_guest": True,
    }
    user = server.new_user()
    assert ok(user.whoami())["is_guest"] is False
    # Two guests are two accounts.
    assert new_guest(server).user_id != body["user_id"]
    # A guest has no password to log in with.
    localpart = body["user_id"][1:].split(":")[0]
    err(MatrixClient(server.base_url).login(localpart, ""), 403, "M_FORBIDDEN")


def test_unknown_kind_is_rejected(server: SingleServer) -> None:
    err(request("POST", server.url("register?kind=admin"), {}), 400, "M_INVALID_PARAM")


def test_guest_registration_disabled(no_guest_server: SingleServer) -> None:
    err(register_guest(no_guest_server), *GUEST_FORBIDDEN)
    err(register_guest(no_guest_server, {"initial_device_display_name": "x"}), *GUEST_FORBIDDEN)
    assert no_guest_server.query("SELECT COUNT(*) FROM users") == [(0,)]
    # Guest access is its own switch: registration of full accounts is closed here too.
    err(MatrixClient(no_guest_server.base_url).register("someone"), 403, "M_FORBIDDEN")


# ------------------------------------------------------------------ the API subset --

# Routes that answer without an access token: open to anyone, so to guests too. A new
# route that does not authenticate must be added here deliberately.
OPEN_ROUTES = frozenset(
    {
        ("GET", "/_matrix/client/versions"),
        ("POST", "/_matrix/client/v3/register"),
        ("GET", "/_matrix/client/v3/register/available"),
        ("GET", "/_matrix/client/v3/login"),
        ("POST", "/_matrix/client/v3/login"),
        ("GET", "/_matrix/client/v3/directory/room/{roomAlias}"),
        ("GET", "/_matrix/client/v3/directory/list/room/{roomId}"),
        ("GET", "/_matrix/client/v3/publicRooms"),
        ("GET", "/health"),
        ("GET", r"/\.well-known/matrix/client"),
        ("GET", "/_matrix/key/v2/server"),
        ("GET", "/_synapse/admin/v1/register"),
        ("POST", "/_synapse/admin/v1/register"),
    }
)

# The authenticated routes a guest may use (homeserver/handlers/guest_access.py), by route
# name. The spec's list, plus: /join/{roomIdOrAlias} (the same join), filters (for /sync),
# typing, receipts and read markers in rooms the guest is in, and logout. Listed here
# too, so that widening the guest subset is a deliberate change to this test.
GUEST_ROUTES = frozenset(
    {
        ("GET", "/_matrix/client/v3/rooms/{roomId}/state"),
        ("GET", "/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}"),
        ("PUT", "/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}"),
        ("GET", "/_matrix/client/v3/rooms/{roomId}/context/{eventId}"),
        ("GET", "/_matrix/client/v3/rooms/{roomId}/event/{eventId}"),
        ("GET", "/_matrix/client/v3/rooms/{roomId}/messages"),
        ("GET", "/_matrix/client/v3/rooms/{roomId}/members"),
        ("GET", "/_matrix/client/v3/rooms/{roomId}/initialSync"),
        ("GET", "/_matrix/client/v3/sync"),
        ("GET", "/_matrix/client/v3/events"),
        ("POST", "/_matrix/client/v3/rooms/{roomId}/join"),
        ("POST", "/_matrix/client/v3/join/{roomIdOrAlias}"),
        ("POST", "/_matrix/client/v3/rooms/{roomId}/leave"),
        ("PUT", "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}"),
        ("PUT", "/_matrix/client/v3/sendToDevice/{eventType}/{txnId}"),
        ("PUT", "/_matrix/client/v3/profile/{userId}/displayname"),
        ("DELETE", "/_matrix/client/v3/profile/{userId}/displayname"),
        ("GET", "/_matrix/client/v3/devices"),
        ("GET", "/_matrix/client/v3/devices/{deviceId}"),
        ("PUT", "/_matrix/client/v3/devices/{deviceId}"),
        ("GET", "/_matrix/client/v3/account/whoami"),
        ("POST", "/_matrix/client/v3/keys/upload"),
        ("POST", "/_matrix/client/v3/keys/query"),
        ("POST", "/_matrix/client/v3/keys/claim"),
        ("POST", "/_matrix/client/v3/user/{userId}/filter"),
        ("GET", "/_matrix/client/v3/user/{userId}/filter/{filterId}"),
        ("PUT", "/_matrix/client/v3/rooms/{roomId}/typing/{userId}"),
        ("POST", "/_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}"),
        ("POST", "/_matrix/client/v3/rooms/{roomId}/read_markers"),
        ("POST", "/_matrix/client/v3/logout"),
    }
)


def all_routes(srv: SingleServer) -> list[Route]:
    """Every route the server's modules register, as the process builds its router."""
    ctx = mock.MagicMock()
    ctx.config = load_config(str(srv.config_path))
    ctx.server_name = ctx.config.server_name
    ctx.extras = {}
    router = Router()
    for name in API_MODULES:
        importlib.import_module(name).install(ctx, router)
    return router.routes


def sample_path(route: Route, guest: MatrixClient) -> str:
    """A concrete path that `route` matches, from its templated name."""
    values = {
        "roomId": "!nothere:localhost",
        "roomIdOrAlias": "!nothere:localhost",
        "roomAlias": "#nothere:localhost",
        "eventId": "$nothere",
        "userId": guest.user_id,
        "deviceId": guest.device_id,
        "eventType": "m.room.message",
        "stateKey": "",
        "txnId": uuid.uuid4().hex,
        "serverName": "localhost",
    }
    path = re.sub(
        r"\{(\w+)\}",
        lambda m: quote(values.get(m.group(1)) or "x"),
        route.name.replace("\\", ""),
    )
    candidates = [path] + [
        re.sub(r"^/_matrix/client/(?:v1|v3|r0|unstable)/", f"/_matrix/client/{v}/", path)
        for v in ("v3", "v1", "unstable")
    ]
    for candidate in candidates:
        if route.regex.match(candidate):
            return candidate
    raise AssertionError(f"no sample path for {route.method} {route.name}")


def test_every_route_is_forbidden_to_guests_unless_listed(server: SingleServer) -> None:
    guest = new_guest(server)
    routes = all_routes(server)
    assert len(routes) > 50
    # Logging out ends the guest's session: last.
    routes.sort(key=lambda r: r.name.endswith("/logout"))
    forbidden: set[tuple[str, str]] = set()
    allowed: set[tuple[str, str]] = set()
    open_: set[tuple[str, str]] = set()
    unreached: set[tuple[str, str]] = set()
    for route in routes:
        key = (route.method, route.name)
        path = sample_path(route, guest)
        body: dict[str, Any] | None = None if route.method in ("GET", "DELETE") else {}
        status, anonymous = request(route.method, server.base_url + path, body)
        anonymous_error = (status, (anonymous or {}).get("errcode"))
        result = request(
            route.method, server.base_url + path, body, access_token=guest.access_token
        )
        if key in OPEN_ROUTES:
            assert anonymous_error != (401, "M_MISSING_TOKEN"), key
            open_.add(key)
            continue
        if anonymous_error != (401, "M_MISSING_TOKEN"):
            # The sample request was refused before authentication (a handler that checks
            # its body first): the guest must get the same refusal, and nothing more.
            assert 400 <= status < 500, f"{key} answers without a token ({status} {anonymous})"
            assert (result[0], (result[1] or {}).get("errcode")) == anonymous_error, key
            unreached.add(key)
            continue
        if key in GUEST_ROUTES:
            assert guest_may_request(route.method, path), key
            status, answer = result
            assert (status, (answer or {}).get("errcode")) != GUEST_FORBIDDEN, (key, answer)
            assert status != 500, (key, answer)
            allowed.add(key)
        else:
            assert not guest_may_request(route.method, path), key
            err(result, *GUEST_FORBIDDEN)
            forbidden.add(key)
    assert open_ == OPEN_ROUTES
    # Most authenticated routes authenticate first, so the guest check is really exercised.
    assert len(unreached) <= 3, unreached
    # The routes every build has, on each side.
    assert {
        ("GET", "/_matrix/client/v3/sync"),
        ("PUT", "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}"),
        ("GET", "/_matrix/client/v3/rooms/{roomId}/messages"),
        ("POST", "/_matrix/client/v3/logout"),
    } <= allowed
    assert {
        ("POST", "/_matrix/client/v3/createRoom"),
        ("POST", "/_matrix/client/v3/rooms/{roomId}/invite"),
        ("PUT", "/_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}"),
        ("GET", "/_matrix/client/v3/joined_rooms"),
        ("POST", "/_matrix/client/v3/publicRooms"),
        ("PUT", "/_matrix/client/v3/user/{userId}/account_data/{type}"),
    } <= forbidden


def test_the_check_sees_every_version_prefix_and_head(server: SingleServer) -> None:
    guest = new_guest(server)
    for prefix in ("r0", "v3", "unstable"):
        url = f"{server.base_url}/_matrix/client/{prefix}/createRoom"
        err(request("POST", url, {}, access_token=guest.access_token), *GUEST_FORBIDDEN)
        url = f"{server.base_url}/_matrix/client/{prefix}/account/whoami"
        assert ok(request("GET", url, access_token=guest.access_token))["is_guest"] is True
    # HEAD is answered as GET, and checked as GET.
    assert request("HEAD", server.url("account/whoami"), access_token=guest.access_token)[0] == 200
    status, _ = request("HEAD", server.url("joined_rooms"), access_token=guest.access_token)
    assert status == 403
    # The same token, once checked, is not cached as allowed for other endpoints.
    ok(guest.whoami())
    err(guest.call("GET", "joined_rooms"), *GUEST_FORBIDDEN)


# ------------------------------------------------------------------ joining --


def test_guests_join_only_rooms_that_allow_them(server: SingleServer) -> None:
    owner, guest = server.new_user("owner"), new_guest(server)
    open_room = new_room(owner, guest_access_state("can_join"))
    closed_room = new_room(owner, guest_access_state("forbidden"))
    unset_room = new_room(owner)
    odd_room = new_room(owner, guest_access_state("sometimes"))
    alias = f"#guests{uuid.uuid4().hex[:8]}:localhost"
    aliased = new_room(owner, guest_access_state("can_join"), room_alias_name=alias[1:-10])

    for room_id in (closed_room, unset_room, odd_room):
        err(guest.call("POST", room_path(room_id, "join"), {}), 403, "M_FORBIDDEN")
        err(guest.join(room_id), 403, "M_FORBIDDEN")
        assert membership_of(owner, room_id, guest.user_id or "") is None
    # Invited or not: the room's guest_access decides.
    ok(owner.call("POST", room_path(closed_room, "invite"), {"user_id": guest.user_id}))
    err(guest.join(closed_room), 403, "M_FORBIDDEN")

    ok(guest.call("POST", room_path(open_room, "join"), {}))
    assert membership_of(owner, open_room, guest.user_id or "") == "join"
    assert ok(guest.join(alias))["room_id"] == aliased
    # Guests may send any event type (since v1.2), and state the power levels allow.
    ok(guest.send_text(open_room, "hello from a guest"))
    ok(guest.send(open_room, {"x": 1}, event_type="org.example.custom"))
    err(
        guest.call("PUT", room_path(open_room, "state", "m.room.name", ""), {"name": "mine"}),
        403,
        "M_FORBIDDEN",
    )
    # But not knock, invite, or create a room: not guest endpoints.
    err(guest.call("POST", f"knock/{quote(closed_room)}", {}), *GUEST_FORBIDDEN)
    err(
        guest.call("POST", room_path(open_room, "invite"), {"user_id": owner.user_id}),
        *GUEST_FORBIDDEN,
    )
    err(guest.create_room(), *GUEST_FORBIDDEN)

    ok(guest.call("POST", room_path(open_room, "leave"), {}))
    assert membership_of(owner, open_room, guest.user_id or "") == "leave"


def test_guests_leave_when_a_room_stops_allowing_them(server: SingleServer) -> None:
    owner, member = server.new_user("owner"), server.new_user("member")
    guests = [new_guest(server) for _ in range(2)]
    room_id = new_room(owner, guest_access_state("can_join"))
    other_room = new_room(owner, guest_access_state("can_join"))
    ok(member.join(room_id))
    for guest in guests:
        ok(guest.join(room_id))
        ok(guest.join(other_room))

    def state_path(value: str) -> tuple[str, str, dict[str, str]]:
        return (
            "PUT",
            room_path(room_id, "state", "m.room.guest_access", ""),
            {"guest_access": value},
        )

    # Setting can_join again changes nothing.
    ok(owner.call(*state_path("can_join")))
    assert all(membership_of(owner, room_id, g.user_id or "") == "join" for g in guests)

    ok(owner.call(*state_path("forbidden")))
    for guest in guests:
        assert membership_of(owner, room_id, guest.user_id or "") == "leave"
        # Only this room.
        assert membership_of(owner, other_room, guest.user_id or "") == "join"
        err(guest.join(room_id), 403, "M_FORBIDDEN")
    assert membership_of(owner, room_id, member.user_id or "") == "join"
    assert membership_of(owner, room_id, owner.user_id or "") == "join"
    # Each guest left by its own leave event, after the state change.
    chunk = ok(owner.call("GET", room_path(room_id, "messages"), params={"limit": 5}))["chunk"]
    types = [(e["type"], e.get("state_key"), e["content"].get("membership")) for e in chunk]
    leaves = {(g.user_id, g.user_id) for g in guests}
    assert {(e["sender"], e["state_key"]) for e in chunk[:2]} == leaves, types
    assert chunk[2]["type"] == "m.room.guest_access", types

    # Removing the event's content entirely (guest_access unset) also removes guests.
    ok(owner.call(*state_path("can_join")))
    ok(guests[0].join(room_id))
    ok(owner.call("PUT", room_path(room_id, "state", "m.room.guest_access", ""), {}))
    assert membership_of(owner, room_id, guests[0].user_id or "") == "leave"


# ------------------------------------------------------------------ reading --


def test_world_readable_rooms_are_read_without_joining(server: SingleServer) -> None:
    owner, guest = server.new_user("owner"), new_guest(server)
    readable = new_room(owner, history_state("world_readable"), name="Readable")
    shared = new_room(owner, history_state("shared"), guest_access_state("can_join"))
    texts = ["one", "two", "three"]
    event_ids = {}
    for room_id in (readable, shared):
        event_ids[room_id] = [ok(owner.send_text(room_id, t))["event_id"] for t in texts]

    chunk = ok(guest.call("GET", room_path(readable, "messages"), params={"limit": 50}))["chunk"]
    bodies = [e["content"].get("body") for e in chunk if e["type"] == "m.room.message"]
    assert bodies == list(reversed(texts))
    middle = event_ids[readable][1]
    assert ok(guest.call("GET", room_path(readable, "event", middle)))["content"]["body"] == "two"
    context = ok(guest.call("GET", room_path(readable, "context", middle), params={"limit": 4}))
    assert context["event"]["event_id"] == middle
    assert [e["event_id"] for e in context["events_before"]][:1] == [event_ids[readable][0]]
    assert [e["event_id"] for e in context["events_after"]] == [event_ids[readable][2]]
    state = ok(guest.call("GET", room_path(readable, "state")))
    assert {"m.room.create", "m.room.history_visibility", "m.room.name"} <= {
        e["type"] for e in state
    }
    assert ok(guest.call("GET", room_path(readable, "state", "m.room.name", ""))) == {
        "name": "Readable"
    }
    members = ok(guest.call("GET", room_path(readable, "members")))["chunk"]
    assert [m["state_key"] for m in members] == [owner.user_id]
    # Reading did not make the guest a member.
    assert membership_of(owner, readable, guest.user_id or "") is None

    # history_visibility shared: nothing without joining ...
    first = event_ids[shared][0]
    for path in (
        room_path(shared, "messages"),
        room_path(shared, "event", first),
        room_path(shared, "context", first),
        room_path(shared, "state"),
        room_path(shared, "state", "m.room.create", ""),
        room_path(shared, "members"),
    ):
        status, body = guest.call("GET", path)
        assert status in (403, 404), (path, body)
        assert body["errcode"] in ("M_FORBIDDEN", "M_NOT_FOUND"), (path, body)
    # ... and, once joined, the history a member sees.
    ok(guest.join(shared))
    chunk = ok(guest.call("GET", room_path(shared, "messages"), params={"limit": 50}))["chunk"]
    assert [e["content"].get("body") for e in chunk if e["type"] == "m.room.message"] == list(
        reversed(texts)
    )
    assert ok(guest.call("GET", room_path(shared, "event", first)))["content"]["body"] == "one"


def test_guests_sync(server: SingleServer) -> None:
    owner, guest = server.new_user("owner"), new_guest(server)
    room_id = new_room(owner, guest_access_state("can_join"))
    ok(guest.join(room_id))
    ok(owner.send_text(room_id, "welcome, guest"))
    first = ok(guest.sync())
    timeline = first["rooms"]["join"][room_id]["timeline"]["events"]
    assert "welcome, guest" in [e["content"].get("body") for e in timeline]
    ok(owner.send_text(room_id, "second"))
    later = ok(guest.sync(since=first["next_batch"], timeout_ms=5000))
    events = later["rooms"]["join"][room_id]["timeline"]["events"]
    assert [e["content"].get("body") for e in events] == ["second"]
    # A filter uploaded by the guest works with /sync.
    filter_id = ok(
        guest.call(
            "POST",
            f"user/{quote(guest.user_id or '')}/filter",
            {"room": {"timeline": {"limit": 1}}},
        )
    )["filter_id"]
    filtered = ok(guest.sync(filter=filter_id))
    assert len(filtered["rooms"]["join"][room_id]["timeline"]["events"]) == 1
    # Removed by a guest_access change: the room moves to "leave".
    ok(
        owner.call(
            "PUT",
            room_path(room_id, "state", "m.room.guest_access", ""),
            {"guest_access": "forbidden"},
        )
    )
    after = ok(guest.sync(since=later["next_batch"], timeout_ms=5000))
    assert room_id in after["rooms"].get("leave", {}), after["rooms"]


# ------------------------------------------------------------------ upgrading --


def upgrade(srv: SingleServer, body: dict[str, Any]) -> tuple[int, Any]:
    return request(
        "POST",
        srv.url("register"),
        {"auth": {"type": "m.login.dummy"}, "password": PASSWORD, **body},
    )


def test_upgrading_a_guest_keeps_its_user_id(server: SingleServer) -> None:
    owner, guest = server.new_user("owner"), new_guest(server)
    room_id = new_room(owner, guest_access_state("can_join"))
    ok(guest.join(room_id))
    assert guest.user_id is not None and guest.access_token is not None
    localpart = guest.user_id[1:].split(":")[0]

    # The user-interactive flow applies as to any registration.
    status, body = request(
        "POST",
        server.url("register"),
        {"guest_access_token": guest.access_token, "username": localpart},
    )
    assert status == 401 and body["flows"] == [{"stages": ["m.login.dummy"]}], body
    err(upgrade(server, {"guest_access_token": guest.access_token}), 400, "M_MISSING_PARAM")
    err(
        upgrade(server, {"guest_access_token": guest.access_token, "username": "someoneelse"}),
        400,
        "M_INVALID_USERNAME",
    )
    err(
        upgrade(server, {"guest_access_token": "gan_x_notatoken", "username": localpart}),
        403,
        "M_FORBIDDEN",
    )
    full = server.new_user("full")
    err(
        upgrade(server, {"guest_access_token": full.access_token, "username": localpart}),
        403,
        "M_FORBIDDEN",
    )
    assert ok(guest.whoami())["is_guest"] is True

    result = ok(
        upgrade(
            server,
            {
                "guest_access_token": guest.access_token,
                "username": localpart,
                "device_id": "UPGRADED",
                "initial_device_display_name": "Now a member",
            },
        )
    )
    assert result["user_id"] == guest.user_id
    assert result["device_id"] == "UPGRADED"
    upgraded = MatrixClient(server.base_url, result["access_token"])
    assert ok(upgraded.whoami()) == {
        "user_id": guest.user_id,
        "device_id": "UPGRADED",
        "is_guest": False,
    }
    # The guest's own token now belongs to a full account too.
    assert ok(guest.whoami())["is_guest"] is False
    ok(guest.create_room())
    # Still in the room it joined as a guest, and no longer removed with the guests.
    assert room_id in ok(upgraded.call("GET", "joined_rooms"))["joined_rooms"]
    ok(
        owner.call(
            "PUT",
            room_path(room_id, "state", "m.room.guest_access", ""),
            {"guest_access": "forbidden"},
        )
    )
    assert membership_of(owner, room_id, guest.user_id) == "join"
    # It has a password now, and is upgraded once only.
    ok(MatrixClient(server.base_url).login(localpart))
    err(
        upgrade(server, {"guest_access_token": guest.access_token, "username": localpart}),
        403,
        "M_FORBIDDEN",
    )
    assert server.query("SELECT is_guest FROM users WHERE user_id = ?", (guest.user_id,)) == [(0,)]
