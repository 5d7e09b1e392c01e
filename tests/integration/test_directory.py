"""Room aliases, canonical alias checks and the published room directory, end to end over
HTTP on a real single process (SQLite). Every refusal has its exact status and errcode,
changes nothing, and the server logs no internal error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from tests.harness.ganglion import run_cli
from tests.harness.matrix import MatrixClient, ok, quote
from tests.harness.single import PASSWORD, SingleServer
from tests.integration.test_create_room import assert_error, room_state


@attrs.define
class Users:
    alice: MatrixClient
    bob: MatrixClient
    carol: MatrixClient
    admin: MatrixClient
    anonymous: MatrixClient


@pytest.fixture(scope="module")
def users(single: SingleServer) -> Users:
    run_cli(
        "register-user", "-c", str(single.config_path),
        "--user", "admin", "--password", PASSWORD, "--admin",
    )  # fmt: skip
    admin = MatrixClient(single.base_url)
    ok(admin.login("admin", PASSWORD))
    return Users(
        single.register("alice"),
        single.register("bob"),
        single.register("carol"),
        admin,
        MatrixClient(single.base_url),
    )


@pytest.fixture(autouse=True)
def _no_internal_errors(single: SingleServer) -> Iterator[None]:
    with single.logs_no_new_errors():
        yield


def alias_path(alias: str) -> str:
    return f"directory/room/{quote(alias)}"


def resolve(client: MatrixClient, alias: str) -> tuple[int, Any]:
    return client.call("GET", alias_path(alias), authed=False)


def put_alias(client: MatrixClient, alias: str, room_id: Any) -> tuple[int, Any]:
    return client.call("PUT", alias_path(alias), {"room_id": room_id})


def set_state(client: MatrixClient, room_id: str, event_type: str, body: Any) -> tuple[int, Any]:
    return client.call("PUT", f"rooms/{quote(room_id)}/state/{quote(event_type)}", body)


def visibility(client: MatrixClient, room_id: str) -> tuple[int, Any]:
    return client.call("GET", f"directory/list/room/{quote(room_id)}", authed=False)


def set_visibility(client: MatrixClient, room_id: str, body: Any) -> tuple[int, Any]:
    return client.call("PUT", f"directory/list/room/{quote(room_id)}", body)


# ----------------------------------------------------------------- aliases --


def test_alias_lifecycle(users: Users) -> None:
    room_id = ok(users.alice.create_room())["room_id"]
    alias = "#lifecycle:localhost"
    assert_error(resolve(users.anonymous, alias), 404, "M_NOT_FOUND")
    assert ok(put_alias(users.alice, alias, room_id)) == {}
    # GET needs no access token.
    assert ok(resolve(users.anonymous, alias)) == {"room_id": room_id, "servers": ["localhost"]}
    aliases = ok(users.alice.call("GET", f"rooms/{quote(room_id)}/aliases"))
    assert aliases == {"aliases": [alias]}
    assert ok(users.alice.call("DELETE", alias_path(alias))) == {}
    assert_error(resolve(users.anonymous, alias), 404, "M_NOT_FOUND")
    assert_error(users.alice.call("DELETE", alias_path(alias)), 404, "M_NOT_FOUND")
    assert ok(users.alice.call("GET", f"rooms/{quote(room_id)}/aliases")) == {"aliases": []}


def test_unicode_and_slash_in_alias_localpart(users: Users) -> None:
    room_id = ok(users.alice.create_room())["room_id"]
    alias = "#café/ünï code:localhost"
    ok(put_alias(users.alice, alias, room_id))
    assert ok(resolve(users.anonymous, alias))["room_id"] == room_id


def test_a_taken_alias_is_409_and_keeps_its_room(users: Users) -> None:
    first = ok(users.alice.create_room())["room_id"]
    second = ok(users.alice.create_room())["room_id"]
    alias = "#conflict:localhost"
    ok(put_alias(users.alice, alias, first))
    assert_error(put_alias(users.alice, alias, second), 409, "M_UNKNOWN")
    assert_error(put_alias(users.alice, alias, first), 409, "M_UNKNOWN")
    assert ok(resolve(users.anonymous, alias))["room_id"] == first


@pytest.mark.parametrize(
    "alias",
    [
        "nohash:localhost",
        "#nocolon",
        "#:localhost",
        "#x:bad server",
        "#" + "x" * 250 + ":localhost",
    ],
)
def test_bad_alias_grammar_is_400_invalid_param(users: Users, alias: str) -> None:
    room_id = ok(users.alice.create_room())["room_id"]
    assert_error(put_alias(users.alice, alias, room_id), 400, "M_INVALID_PARAM")
    assert_error(resolve(users.anonymous, alias), 400, "M_INVALID_PARAM")
    assert_error(users.alice.call("DELETE", alias_path(alias)), 400, "M_INVALID_PARAM")


def test_put_alias_refusals(users: Users) -> None:
    room_id = ok(users.alice.create_room())["room_id"]
    # Only aliases on this server.
    assert_error(put_alias(users.alice, "#x:elsewhere.example", room_id), 400, "M_INVALID_PARAM")
    # Unknown room, and not a room ID at all.
    assert_error(put_alias(users.alice, "#x1:localhost", "!unknown:localhost"), 404, "M_NOT_FOUND")
    assert_error(put_alias(users.alice, "#x2:localhost", "not-a-room"), 400, "M_INVALID_PARAM")
    assert_error(put_alias(users.alice, "#x3:localhost", 5), 400, "M_BAD_JSON")
    assert_error(users.alice.call("PUT", alias_path("#x4:localhost"), {}), 400, "M_MISSING_PARAM")
    assert_error(
        users.alice.call("PUT", alias_path("#x5:localhost"), b"{not json"), 400, "M_NOT_JSON"
    )
    # Not in the room.
    assert_error(put_alias(users.bob, "#x6:localhost", room_id), 403, "M_FORBIDDEN")
    # No access token.
    status, body = users.alice.call(
        "PUT", alias_path("#x7:localhost"), {"room_id": room_id}, authed=False
    )
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
    for n in range(1, 8):
        assert_error(resolve(users.anonymous, f"#x{n}:localhost"), 404, "M_NOT_FOUND")


def test_remote_alias_is_not_found_locally(users: Users) -> None:
    assert_error(resolve(users.anonymous, "#room:elsewhere.example"), 404, "M_NOT_FOUND")


def test_who_may_delete_an_alias(users: Users) -> None:
    alice, bob, carol = users.alice, users.bob, users.carol
    room_id = ok(alice.create_room(preset="public_chat"))["room_id"]
    ok(bob.join(room_id))
    ok(carol.join(room_id))
    # bob (power 0) may create an alias as a member, and delete his own.
    ok(put_alias(bob, "#bobs:localhost", room_id))
    ok(put_alias(bob, "#bobs2:localhost", room_id))
    ok(put_alias(alice, "#alices:localhost", room_id))
    ok(put_alias(alice, "#alices2:localhost", room_id))
    # carol neither created it nor may set the canonical alias (needs 50).
    assert_error(carol.call("DELETE", alias_path("#bobs:localhost")), 403, "M_FORBIDDEN")
    assert_error(bob.call("DELETE", alias_path("#alices:localhost")), 403, "M_FORBIDDEN")
    ok(bob.call("DELETE", alias_path("#bobs:localhost")))
    # alice may set the canonical alias, so she may delete bob's alias.
    ok(alice.call("DELETE", alias_path("#bobs2:localhost")))
    # A server admin may delete any alias, room member or not.
    ok(users.admin.call("DELETE", alias_path("#alices2:localhost")))
    # Promoted to 50, carol may delete alice's alias.
    power = room_state(alice, room_id)[("m.room.power_levels", "")]["content"]
    power["users"][carol.user_id] = 50
    ok(set_state(alice, room_id, "m.room.power_levels", power))
    ok(carol.call("DELETE", alias_path("#alices:localhost")))
    assert ok(alice.call("GET", f"rooms/{quote(room_id)}/aliases")) == {"aliases": []}


def test_local_aliases_visibility(users: Users) -> None:
    private = ok(users.alice.create_room(room_alias_name="private-room"))["room_id"]
    readable = ok(
        users.alice.create_room(
            room_alias_name="readable-room",
            initial_state=[
                {
                    "type": "m.room.history_visibility",
                    "content": {"history_visibility": "world_readable"},
                }
            ],
        )
    )["room_id"]
    path = f"rooms/{quote(private)}/aliases"
    assert ok(users.alice.call("GET", path)) == {"aliases": ["#private-room:localhost"]}
    assert_error(users.bob.call("GET", path), 403, "M_FORBIDDEN")
    readable_path = f"rooms/{quote(readable)}/aliases"
    assert ok(users.bob.call("GET", readable_path)) == {"aliases": ["#readable-room:localhost"]}
    assert_error(users.bob.call("GET", "rooms/!nope:localhost/aliases"), 404, "M_NOT_FOUND")
    status, body = users.bob.call("GET", path, authed=False)
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")


# --------------------------------------------------------- canonical alias --


def test_canonical_alias_must_point_to_the_room(users: Users) -> None:
    alice = users.alice
    room_id = ok(alice.create_room(room_alias_name="canon"))["room_id"]
    other = ok(alice.create_room(room_alias_name="canon-other"))["room_id"]
    assert other != room_id
    ok(put_alias(alice, "#canon-alt:localhost", room_id))
    before = room_state(alice, room_id)[("m.room.canonical_alias", "")]["content"]

    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"alias": "#canon-other:localhost"}, 400, "M_BAD_ALIAS"),
        ({"alias": "#unknown:localhost"}, 400, "M_BAD_ALIAS"),
        ({"alias": "#canon:localhost", "alt_aliases": ["#canon-other:localhost"]},
         400, "M_BAD_ALIAS"),
        ({"alias": "#remote:elsewhere.example"}, 400, "M_BAD_ALIAS"),
        ({"alias": "no-sigil"}, 400, "M_INVALID_PARAM"),
        ({"alias": 5}, 400, "M_INVALID_PARAM"),
        ({"alt_aliases": "#canon:localhost"}, 400, "M_INVALID_PARAM"),
        ({"alt_aliases": ["#canon:localhost", None]}, 400, "M_INVALID_PARAM"),
    ]  # fmt: skip
    for content, status, errcode in cases:
        assert_error(set_state(alice, room_id, "m.room.canonical_alias", content), status, errcode)
    assert room_state(alice, room_id)[("m.room.canonical_alias", "")]["content"] == before

    good = {"alias": "#canon-alt:localhost", "alt_aliases": ["#canon:localhost"]}
    ok(set_state(alice, room_id, "m.room.canonical_alias", good))
    assert room_state(alice, room_id)[("m.room.canonical_alias", "")]["content"] == good
    # Clearing the canonical alias needs no alias at all.
    ok(set_state(alice, room_id, "m.room.canonical_alias", {}))
    ok(set_state(alice, room_id, "m.room.canonical_alias", {"alias": None, "alt_aliases": []}))


def test_permission_is_checked_before_the_aliases(users: Users) -> None:
    room_id = ok(users.alice.create_room(preset="public_chat"))["room_id"]
    ok(users.bob.join(room_id))
    # bob lacks the power to send it: 403, whatever the aliases say.
    result = set_state(users.bob, room_id, "m.room.canonical_alias", {"alias": "#nope:localhost"})
    assert_error(result, 403, "M_FORBIDDEN")


# -------------------------------------------------------------- visibility --


def test_room_visibility(users: Users) -> None:
    room_id = ok(users.alice.create_room())["room_id"]
    assert ok(visibility(users.anonymous, room_id)) == {"visibility": "private"}
    assert_error(visibility(users.anonymous, "!unknown:localhost"), 404, "M_NOT_FOUND")
    assert_error(set_visibility(users.bob, room_id, {"visibility": "public"}), 403, "M_FORBIDDEN")
    assert_error(
        set_visibility(users.alice, room_id, {"visibility": "open"}), 400, "M_INVALID_PARAM"
    )
    assert_error(
        set_visibility(users.alice, "!unknown:localhost", {"visibility": "public"}),
        404,
        "M_NOT_FOUND",
    )
    status, body = users.alice.call(
        "PUT", f"directory/list/room/{quote(room_id)}", {"visibility": "public"}, authed=False
    )
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
    assert ok(visibility(users.anonymous, room_id)) == {"visibility": "private"}

    ok(set_visibility(users.alice, room_id, {"visibility": "public"}))
    assert ok(visibility(users.anonymous, room_id)) == {"visibility": "public"}
    ok(set_visibility(users.alice, room_id, {"visibility": "private"}))
    assert ok(visibility(users.anonymous, room_id)) == {"visibility": "private"}
    # The visibility defaults to public.
    ok(set_visibility(users.alice, room_id, {}))
    assert ok(visibility(users.anonymous, room_id)) == {"visibility": "public"}
    # A server admin may change it without being in the room.
    ok(set_visibility(users.admin, room_id, {"visibility": "private"}))
    assert ok(visibility(users.anonymous, room_id)) == {"visibility": "private"}


# ------------------------------------------------------------ /publicRooms --


def public_rooms(client: MatrixClient, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = ok(client.call("GET", "publicRooms", params=params, authed=False))
    return body


def search(client: MatrixClient, body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = ok(client.call("POST", "publicRooms", body))
    return result


def test_public_room_entry_fields(users: Users) -> None:
    alice, bob = users.alice, users.bob
    room_id = ok(
        alice.create_room(
            visibility="public",
            room_alias_name="fields",
            name="Fields Room",
            topic="Zebra topic",
            creation_content={"type": "m.space"},
            initial_state=[
                {"type": "m.room.avatar", "content": {"url": "mxc://localhost/avatar"}},
                {"type": "m.room.guest_access", "content": {"guest_access": "can_join"}},
                {
                    "type": "m.room.history_visibility",
                    "content": {"history_visibility": "world_readable"},
                },
            ],
        )  # fmt: skip
    )["room_id"]
    ok(bob.join(room_id))
    chunk = search(alice, {"filter": {"generic_search_term": "zebra"}})["chunk"]
    assert chunk == [
        {
            "room_id": room_id,
            "name": "Fields Room",
            "topic": "Zebra topic",
            "canonical_alias": "#fields:localhost",
            "num_joined_members": 2,
            "world_readable": True,
            "guest_can_join": True,
            "join_rule": "public",
            "avatar_url": "mxc://localhost/avatar",
            "room_type": "m.space",
        }
    ]
    # A bare room: only the required fields and its join rule.
    bare = ok(alice.create_room(visibility="public"))["room_id"]
    entries = {e["room_id"]: e for e in public_rooms(alice)["chunk"]}
    assert entries[bare] == {
        "room_id": bare,
        "num_joined_members": 1,
        "world_readable": False,
        "guest_can_join": False,
        "join_rule": "public",
    }
    # Unpublished, it is gone.
    ok(set_visibility(alice, bare, {"visibility": "private"}))
    assert bare not in [e["room_id"] for e in public_rooms(alice)["chunk"]]


def test_search_matches_name_topic_and_alias_case_insensitively(users: Users) -> None:
    alice = users.alice
    by_name = ok(alice.create_room(visibility="public", name="The QUOKKA lounge"))["room_id"]
    by_topic = ok(alice.create_room(visibility="public", topic="all about quokkas"))["room_id"]
    by_alias = ok(alice.create_room(visibility="public", room_alias_name="Quokka-fans"))["room_id"]
    hidden = ok(alice.create_room(name="quokka but private"))["room_id"]
    found = search(alice, {"filter": {"generic_search_term": "qUoKkA"}})
    ids = {e["room_id"] for e in found["chunk"]}
    assert ids == {by_name, by_topic, by_alias}
    assert hidden not in ids
    assert found["total_room_count_estimate"] == 3
    assert search(alice, {"filter": {"generic_search_term": "no-such-words"}})["chunk"] == []
    # An empty term matches everything published.
    everything = search(alice, {"filter": {"generic_search_term": ""}})
    assert ids <= {e["room_id"] for e in everything["chunk"]}


def test_room_types_filter(users: Users) -> None:
    alice = users.alice
    space = ok(
        alice.create_room(
            visibility="public", name="typed-filter", creation_content={"type": "m.space"}
        )
    )["room_id"]
    plain = ok(alice.create_room(visibility="public", name="typed-filter"))["room_id"]

    def ids(room_types: list[str | None]) -> set[str]:
        body = {"filter": {"generic_search_term": "typed-filter", "room_types": room_types}}
        return {e["room_id"] for e in search(alice, body)["chunk"]}

    assert ids(["m.space"]) == {space}
    assert ids([None]) == {plain}
    assert ids([None, "m.space"]) == {space, plain}
    assert ids([]) == set()


def test_order_and_pagination(users: Users) -> None:
    alice, bob, carol = users.alice, users.bob, users.carol
    rooms = [ok(alice.create_room(visibility="public"))["room_id"] for _ in range(4)]
    for user in (bob, carol):
        ok(user.join(rooms[2]))
    ok(bob.join(rooms[1]))

    everything = public_rooms(alice)
    entries = everything["chunk"]
    assert "next_batch" not in everything and "prev_batch" not in everything
    assert everything["total_room_count_estimate"] == len(entries)
    keys = [(-e["num_joined_members"], e["room_id"]) for e in entries]
    assert keys == sorted(keys)  # most members first, then by room ID
    position = {e["room_id"]: i for i, e in enumerate(entries)}
    assert position[rooms[2]] < position[rooms[1]] < min(position[rooms[0]], position[rooms[3]])
    all_ids = [e["room_id"] for e in entries]

    # Forwards, two at a time, with GET...
    pages: list[list[str]] = []
    page = public_rooms(alice, limit=2)
    assert "prev_batch" not in page
    while True:
        pages.append([e["room_id"] for e in page["chunk"]])
        assert page["total_room_count_estimate"] == len(all_ids)
        if "next_batch" not in page:
            break
        page = public_rooms(alice, limit=2, since=page["next_batch"])
    assert [rid for p in pages for rid in p] == all_ids
    assert all(len(p) == 2 for p in pages[:-1])

    # ...and back again from the last page.
    back: list[list[str]] = [[e["room_id"] for e in page["chunk"]]]
    while "prev_batch" in page:
        page = public_rooms(alice, limit=2, since=page["prev_batch"])
        back.insert(0, [e["room_id"] for e in page["chunk"]])
    assert [rid for p in back for rid in p] == all_ids

    # POST paginates the same way.
    first = search(alice, {"limit": 3})
    assert [e["room_id"] for e in first["chunk"]] == all_ids[:3]
    second = search(alice, {"limit": 3, "since": first["next_batch"]})
    assert [e["room_id"] for e in second["chunk"]] == all_ids[3:6]
    assert "prev_batch" in second


@pytest.mark.parametrize(
    ("method", "params", "body", "status", "errcode"),
    [
        ("GET", {"since": "garbage!"}, None, 400, "M_INVALID_PARAM"),
        ("GET", {"limit": "x"}, None, 400, "M_INVALID_PARAM"),
        ("GET", {"limit": "0"}, None, 400, "M_INVALID_PARAM"),
        ("GET", {"server": "elsewhere.example"}, None, 400, "M_INVALID_PARAM"),
        ("POST", {}, {"since": "garbage!"}, 400, "M_INVALID_PARAM"),
        ("POST", {}, {"since": 5}, 400, "M_BAD_JSON"),
        ("POST", {}, {"limit": "10"}, 400, "M_BAD_JSON"),
        ("POST", {}, {"limit": -1}, 400, "M_INVALID_PARAM"),
        ("POST", {}, {"filter": "x"}, 400, "M_BAD_JSON"),
        ("POST", {}, {"filter": {"generic_search_term": 5}}, 400, "M_BAD_JSON"),
        ("POST", {}, {"filter": {"room_types": "m.space"}}, 400, "M_BAD_JSON"),
        ("POST", {}, {"include_all_networks": "yes"}, 400, "M_BAD_JSON"),
        ("POST", {}, {"include_all_networks": True, "third_party_instance_id": "irc"},
         400, "M_INVALID_PARAM"),
        ("POST", {}, [1], 400, "M_NOT_JSON"),
        ("POST", {"server": "elsewhere.example"}, {}, 400, "M_INVALID_PARAM"),
    ],
)  # fmt: skip
def test_public_rooms_bad_input(
    users: Users,
    method: str,
    params: dict[str, Any],
    body: Any,
    status: int,
    errcode: str,
) -> None:
    assert_error(users.alice.call(method, "publicRooms", body, params=params), status, errcode)


def test_public_rooms_misc(users: Users, single: SingleServer) -> None:
    # POST needs an access token; GET does not.
    status, body = users.alice.call("POST", "publicRooms", {}, authed=False)
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
    assert "chunk" in public_rooms(users.anonymous, server="localhost")
    # No third-party networks are bridged here.
    assert search(users.alice, {"third_party_instance_id": "irc"}) == {
        "chunk": [],
        "total_room_count_estimate": 0,
    }
    assert "chunk" in search(users.alice, {"include_all_networks": True})


def test_join_by_alias_resolves_through_the_directory(users: Users) -> None:
    room_id = ok(users.alice.create_room(preset="public_chat", room_alias_name="join-me"))[
        "room_id"
    ]
    assert ok(users.carol.join("#join-me:localhost"))["room_id"] == room_id
    member = room_state(users.alice, room_id)[("m.room.member", users.carol.user_id or "")]
    assert member["content"]["membership"] == "join"
    assert_error(users.carol.join("#no-such-alias:localhost"), 404, "M_NOT_FOUND")
