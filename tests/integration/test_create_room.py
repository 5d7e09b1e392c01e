"""POST /createRoom with every option, end to end over HTTP on a real single process (SQLite).

The server's `default_room_version` is set to 11 (not the built-in 12) so that the tests
see the config being used. Room state is read back through the client API. After every
test the server has logged no internal error, and a refused request has created nothing:
the creator's room list is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
import pytest

from tests.harness.matrix import CLIENT_V3, MatrixClient, ok, quote
from tests.harness.single import SingleServer, single_server
from workers.config import ConfigError, parse_config

CONFIG_DEFAULT_VERSION = "11"


def assert_error(result: tuple[int, Any], status: int, errcode: str) -> None:
    got_status, body = result
    got = body.get("errcode") if isinstance(body, dict) else body
    assert (got_status, got) == (status, errcode), body
    assert isinstance(body.get("error"), str)


def room_events(client: MatrixClient, room_id: str) -> list[dict[str, Any]]:
    """Every event of the room, oldest first."""
    body = ok(
        client.call("GET", f"rooms/{quote(room_id)}/messages", params={"dir": "b", "limit": 1000})
    )
    return list(reversed(body["chunk"]))


def room_state(client: MatrixClient, room_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The room's current state: GET /rooms/{id}/state where served, else from history."""
    status, body = client.call("GET", f"rooms/{quote(room_id)}/state")
    if status == 200 and isinstance(body, list):
        return {(e["type"], e["state_key"]): e for e in body}
    state = {}
    for event in room_events(client, room_id):
        if "state_key" in event:
            state[(event["type"], event["state_key"])] = event
    return state


def content(
    state: dict[tuple[str, str], dict[str, Any]], event_type: str, key: str | None = ""
) -> Any:
    assert key is not None
    return state[(event_type, key)]["content"]


def state_types(client: MatrixClient, room_id: str) -> list[tuple[str, str]]:
    return [(e["type"], e["state_key"]) for e in room_events(client, room_id) if "state_key" in e]


def joined_and_invited(client: MatrixClient) -> list[str]:
    body = ok(client.sync())
    rooms = body.get("rooms", {})
    return sorted(rooms.get("join", {})) + sorted(rooms.get("invite", {}))


@attrs.define
class Users:
    alice: MatrixClient
    bob: MatrixClient
    carol: MatrixClient


def _default_room_version(config: dict[str, Any]) -> None:
    config["default_room_version"] = CONFIG_DEFAULT_VERSION


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleServer]:
    with single_server(tmp_path_factory.mktemp("create_room"), tweak=_default_room_version) as srv:
        yield srv


@pytest.fixture(scope="module")
def users(server: SingleServer) -> Users:
    return Users(server.register("alice"), server.register("bob"), server.register("carol"))


@pytest.fixture(autouse=True)
def _no_internal_errors(server: SingleServer) -> Iterator[None]:
    with server.logs_no_new_errors():
        yield


def create(users: Users, **body: Any) -> str:
    room_id: str = ok(users.alice.create_room(**body))["room_id"]
    return room_id


def refused(users: Users, body: dict[str, Any], status: int, errcode: str) -> None:
    """The request is refused with (status, errcode) and creates nothing."""
    before = joined_and_invited(users.alice), joined_and_invited(users.bob)
    assert_error(users.alice.create_room(**body), status, errcode)
    assert (joined_and_invited(users.alice), joined_and_invited(users.bob)) == before


# ------------------------------------------------------------------ presets --


def test_defaults_are_private_chat_in_the_configured_room_version(users: Users) -> None:
    room_id = create(users)
    alice = users.alice.user_id
    assert state_types(users.alice, room_id) == [
        ("m.room.create", ""),
        ("m.room.member", alice),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.guest_access", ""),
    ]
    state = room_state(users.alice, room_id)
    create_content = content(state, "m.room.create")
    assert create_content["room_version"] == CONFIG_DEFAULT_VERSION
    assert "creator" not in create_content  # v11: the sender is the creator
    assert content(state, "m.room.join_rules") == {"join_rule": "invite"}
    assert content(state, "m.room.history_visibility") == {"history_visibility": "shared"}
    assert content(state, "m.room.guest_access") == {"guest_access": "can_join"}
    power = content(state, "m.room.power_levels")
    assert power["users"] == {alice: 100}
    assert power["events"]["m.room.tombstone"] == 100
    assert ok(users.alice.call("GET", f"directory/list/room/{quote(room_id)}")) == {
        "visibility": "private"
    }


@pytest.mark.parametrize(
    ("preset", "join_rule", "guest_access"),
    [
        ("private_chat", "invite", "can_join"),
        ("trusted_private_chat", "invite", "can_join"),
        ("public_chat", "public", "forbidden"),
    ],
)
def test_preset_state_matches_the_spec_table(
    users: Users, preset: str, join_rule: str, guest_access: str
) -> None:
    room_id = create(users, preset=preset)
    state = room_state(users.alice, room_id)
    assert content(state, "m.room.join_rules") == {"join_rule": join_rule}
    assert content(state, "m.room.history_visibility") == {"history_visibility": "shared"}
    assert content(state, "m.room.guest_access") == {"guest_access": guest_access}


def test_public_visibility_implies_public_chat_and_publishes(users: Users) -> None:
    room_id = create(users, visibility="public", name="Published by createRoom")
    state = room_state(users.alice, room_id)
    assert content(state, "m.room.join_rules") == {"join_rule": "public"}
    assert content(state, "m.room.guest_access") == {"guest_access": "forbidden"}
    assert ok(users.alice.call("GET", f"directory/list/room/{quote(room_id)}")) == {
        "visibility": "public"
    }
    listed = ok(users.alice.call("GET", "publicRooms"))["chunk"]
    assert room_id in [r["room_id"] for r in listed]


def test_preset_wins_over_visibility_for_state_but_not_publication(users: Users) -> None:
    room_id = create(users, visibility="private", preset="public_chat")
    state = room_state(users.alice, room_id)
    assert content(state, "m.room.join_rules") == {"join_rule": "public"}
    assert ok(users.alice.call("GET", f"directory/list/room/{quote(room_id)}")) == {
        "visibility": "private"
    }
    listed = ok(users.alice.call("GET", "publicRooms"))["chunk"]
    assert room_id not in [r["room_id"] for r in listed]


def test_trusted_private_chat_v11_gives_invitees_the_creators_power(users: Users) -> None:
    bob = users.bob.user_id
    room_id = create(users, preset="trusted_private_chat", invite=[bob], is_direct=True)
    state = room_state(users.alice, room_id)
    assert content(state, "m.room.power_levels")["users"] == {users.alice.user_id: 100, bob: 100}
    assert content(state, "m.room.member", bob) == {"membership": "invite", "is_direct": True}
    assert "additional_creators" not in content(state, "m.room.create")


def test_trusted_private_chat_v12_makes_invitees_additional_creators(users: Users) -> None:
    bob, carol = users.bob.user_id, users.carol.user_id
    room_id = create(
        users,
        room_version="12",
        preset="trusted_private_chat",
        invite=[bob],
        creation_content={"additional_creators": [carol, bob]},
    )
    state = room_state(users.alice, room_id)
    create_content = content(state, "m.room.create")
    assert create_content["room_version"] == "12"
    assert create_content["additional_creators"] == [carol, bob]  # combined, deduplicated
    power = content(state, "m.room.power_levels")
    assert power["users"] == {}  # creators are never listed in v12
    assert power["events"]["m.room.tombstone"] == 150 > power["state_default"]
    assert content(state, "m.room.member", bob) == {"membership": "invite"}
    # bob is a creator: once joined, he has infinite power and may set any state.
    ok(users.bob.join(room_id))
    ok(users.bob.call("PUT", f"rooms/{quote(room_id)}/state/m.room.tombstone", {"body": "x"}))


def test_private_chat_v12_lists_no_creator_in_power_levels(users: Users) -> None:
    room_id = create(users, room_version="12", invite=[users.bob.user_id])
    state = room_state(users.alice, room_id)
    assert content(state, "m.room.power_levels")["users"] == {}
    assert "additional_creators" not in content(state, "m.room.create")
    assert room_id.startswith("!") and ":" not in room_id  # v12: the create event's hash


# -------------------------------------------------- name, topic, invites --


def test_name_topic_and_invites(users: Users) -> None:
    bob, carol = users.bob.user_id, users.carol.user_id
    room_id = create(users, name="Café", topic="All about ☕", invite=[bob, carol])
    state = room_state(users.alice, room_id)
    assert content(state, "m.room.name") == {"name": "Café"}
    assert content(state, "m.room.topic") == {
        "topic": "All about ☕",
        "m.topic": {"m.text": [{"mimetype": "text/plain", "body": "All about ☕"}]},
    }
    assert content(state, "m.room.member", bob) == {"membership": "invite"}
    assert content(state, "m.room.member", carol) == {"membership": "invite"}
    # The invitees see the invite.
    assert room_id in ok(users.bob.sync())["rooms"]["invite"]


def test_is_direct_marks_the_invites(users: Users) -> None:
    bob = users.bob.user_id
    room_id = create(users, invite=[bob], is_direct=True)
    state = room_state(users.alice, room_id)
    assert content(state, "m.room.member", bob) == {"membership": "invite", "is_direct": True}
    invite_state = ok(users.bob.sync())["rooms"]["invite"][room_id]["invite_state"]["events"]
    own = [e for e in invite_state if e["type"] == "m.room.member" and e["state_key"] == bob]
    assert own and own[0]["content"]["is_direct"] is True


# ------------------------------------------------------------ initial_state --


def test_initial_state_overrides_the_preset_and_name_overrides_initial_state(
    users: Users,
) -> None:
    alice = users.alice.user_id
    room_id = create(
        users,
        preset="private_chat",
        name="From the name field",
        invite=[users.bob.user_id],
        initial_state=[
            {"type": "m.room.join_rules", "content": {"join_rule": "public"}},
            {"type": "m.room.name", "state_key": "", "content": {"name": "From initial_state"}},
            {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
            {"type": "org.example.custom", "state_key": "k", "content": {"v": 1}},
        ],
    )
    # One join_rules event (no preset one first), initial_state in its order, then the
    # name field, then invites.
    assert state_types(users.alice, room_id) == [
        ("m.room.create", ""),
        ("m.room.member", alice),
        ("m.room.power_levels", ""),
        ("m.room.history_visibility", ""),
        ("m.room.guest_access", ""),
        ("m.room.join_rules", ""),
        ("m.room.encryption", ""),
        ("org.example.custom", "k"),
        ("m.room.name", ""),
        ("m.room.member", users.bob.user_id),
    ]
    state = room_state(users.alice, room_id)
    assert content(state, "m.room.join_rules") == {"join_rule": "public"}
    assert content(state, "m.room.name") == {"name": "From the name field"}
    assert content(state, "org.example.custom", "k") == {"v": 1}


def test_every_option_in_the_spec_order(users: Users) -> None:
    alice, bob = users.alice.user_id, users.bob.user_id
    room_id = create(
        users,
        room_version="10",
        visibility="public",
        preset="public_chat",
        room_alias_name="every-option",
        name="Everything",
        topic="All options",
        invite=[bob],
        is_direct=False,
        creation_content={"m.federate": False},
        power_level_content_override={"events_default": 10},
        initial_state=[{"type": "m.room.history_visibility",
                        "content": {"history_visibility": "world_readable"}}],
    )  # fmt: skip
    assert state_types(users.alice, room_id) == [
        ("m.room.create", ""),
        ("m.room.member", alice),
        ("m.room.power_levels", ""),
        ("m.room.canonical_alias", ""),
        ("m.room.join_rules", ""),
        ("m.room.guest_access", ""),
        ("m.room.history_visibility", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.member", bob),
    ]
    state = room_state(users.alice, room_id)
    assert content(state, "m.room.create") == {
        "m.federate": False,
        "room_version": "10",
        "creator": alice,
    }
    assert content(state, "m.room.power_levels")["events_default"] == 10
    assert content(state, "m.room.canonical_alias") == {"alias": "#every-option:localhost"}
    assert content(state, "m.room.history_visibility") == {"history_visibility": "world_readable"}
    assert content(state, "m.room.member", bob) == {"membership": "invite"}
    assert ok(users.alice.call("GET", f"directory/room/{quote('#every-option:localhost')}")) == {
        "room_id": room_id,
        "servers": ["localhost"],
    }


# ------------------------------------------ creation_content, power levels --


@pytest.mark.parametrize("version", ["1", "10", "11", "12"])
def test_creation_content_keeps_extra_keys_and_the_server_sets_creator_and_version(
    users: Users, version: str
) -> None:
    room_id = create(
        users,
        room_version=version,
        creation_content={
            "type": "m.space",
            "m.federate": True,
            "creator": "@mallory:localhost",
            "room_version": "3",
        },
    )
    got = content(room_state(users.alice, room_id), "m.room.create")
    expected: dict[str, Any] = {"type": "m.space", "m.federate": True, "room_version": version}
    if version in ("1", "10"):
        expected["creator"] = users.alice.user_id
    assert got == expected


def test_power_level_content_override_replaces_top_level_keys(users: Users) -> None:
    alice, bob = users.alice.user_id, users.bob.user_id
    override = {
        "users": {alice: 100, bob: 50},
        "events_default": 20,
        "events": {"m.room.name": 75},
    }
    room_id = create(users, power_level_content_override=override, name="Overridden")
    power = content(room_state(users.alice, room_id), "m.room.power_levels")
    assert power["users"] == override["users"]
    assert power["events"] == {"m.room.name": 75}
    assert power["events_default"] == 20
    assert power["state_default"] == 50  # untouched defaults stay


@pytest.mark.parametrize("version", ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"])
def test_every_known_room_version_can_be_created(users: Users, version: str) -> None:
    room_id = create(users, room_version=version, name=f"v{version}", room_alias_name=f"v{version}")
    state = room_state(users.alice, room_id)
    assert content(state, "m.room.create")["room_version"] == version
    assert content(state, "m.room.canonical_alias") == {"alias": f"#v{version}:localhost"}


# ------------------------------------------------------------ room aliases --


def test_room_alias_name_creates_the_alias_and_a_taken_one_is_refused(users: Users) -> None:
    room_id = create(users, room_alias_name="taken")
    alias = "#taken:localhost"
    assert ok(users.bob.call("GET", f"directory/room/{quote(alias)}"))["room_id"] == room_id
    assert content(room_state(users.alice, room_id), "m.room.canonical_alias") == {"alias": alias}
    refused(users, {"room_alias_name": "taken", "name": "second"}, 400, "M_ROOM_IN_USE")
    # The alias still points to the first room.
    assert ok(users.bob.call("GET", f"directory/room/{quote(alias)}"))["room_id"] == room_id


@pytest.mark.parametrize(
    ("alias_name", "errcode"),
    [
        ("has:colon", "M_INVALID_PARAM"),
        ("", "M_INVALID_PARAM"),
        ("nul\x00", "M_INVALID_PARAM"),
        ("x" * 250, "M_INVALID_PARAM"),  # the whole alias would exceed 255 bytes
        (5, "M_BAD_JSON"),
        (["a"], "M_BAD_JSON"),
    ],
)
def test_bad_room_alias_name_is_refused(users: Users, alias_name: Any, errcode: str) -> None:
    refused(users, {"room_alias_name": alias_name}, 400, errcode)


def test_initial_state_canonical_alias_must_point_to_the_new_room(users: Users) -> None:
    other = create(users, room_alias_name="elsewhere")
    assert other
    bad = {"type": "m.room.canonical_alias", "content": {"alias": "#elsewhere:localhost"}}
    refused(users, {"initial_state": [bad]}, 400, "M_BAD_ALIAS")
    unknown = {"type": "m.room.canonical_alias", "content": {"alt_aliases": ["#nope:localhost"]}}
    refused(users, {"initial_state": [unknown]}, 400, "M_BAD_ALIAS")
    malformed = {"type": "m.room.canonical_alias", "content": {"alias": "not-an-alias"}}
    refused(users, {"initial_state": [malformed]}, 400, "M_INVALID_PARAM")
    # Naming the alias being created is fine.
    good = {
        "type": "m.room.canonical_alias",
        "content": {"alias": "#mine:localhost", "alt_aliases": ["#mine:localhost"]},
    }
    room_id = create(users, room_alias_name="mine", initial_state=[good])
    assert content(room_state(users.alice, room_id), "m.room.canonical_alias") == good["content"]


# ------------------------------------------------------------ refusals --


@pytest.mark.parametrize(
    ("body", "status", "errcode"),
    [
        ({"room_version": "13"}, 400, "M_UNSUPPORTED_ROOM_VERSION"),
        ({"room_version": "1.0"}, 400, "M_UNSUPPORTED_ROOM_VERSION"),
        ({"room_version": None}, 400, "M_UNSUPPORTED_ROOM_VERSION"),
        (
            {"invite_3pid": [{"id_server": "id.example", "id_access_token": "t",
                              "medium": "email", "address": "a@example.com"}]},
            400,
            "M_UNKNOWN",
        ),
        ({"invite_3pid": "x"}, 400, "M_BAD_JSON"),
        ({"is_direct": "yes"}, 400, "M_BAD_JSON"),
        ({"visibility": "hidden"}, 400, "M_INVALID_PARAM"),
        ({"invite": ["@bob:localhost", "bad"]}, 400, "M_INVALID_PARAM"),
        ({"room_version": "12", "creation_content": {"additional_creators": ["nope"]}},
         400, "M_INVALID_PARAM"),
        ({"room_version": "12", "creation_content": {"additional_creators": "x"}},
         400, "M_BAD_JSON"),
        ({"initial_state": [{"type": "m.room.create", "content": {}}]},
         400, "M_INVALID_ROOM_STATE"),
        ({"initial_state": [{"type": "m.room.name", "content": {"name": "x"}, "extra": 1},
                            {"content": {}}]}, 400, "M_BAD_JSON"),
        # The creator could not name the room with these power levels: refused up front.
        ({"name": "x", "power_level_content_override": {"events": {"m.room.name": 101}}},
         400, "M_INVALID_ROOM_STATE"),
        # Inviting is refused part-way if the creator lowers their own power first.
        ({"invite": ["@bob:localhost"],
          "power_level_content_override": {"invite": 100, "users": {"@alice:localhost": 50}}},
         400, "M_INVALID_ROOM_STATE"),
        # Inviting yourself: you are already joined.
        ({"invite": ["@alice:localhost"]}, 400, "M_INVALID_ROOM_STATE"),
        # v12 creators may not be listed in power levels.
        ({"room_version": "12",
          "power_level_content_override": {"users": {"@alice:localhost": 100}}},
         400, "M_INVALID_ROOM_STATE"),
        # A state event larger than an event may be.
        ({"initial_state": [{"type": "big", "content": {"x": "y" * 70_000}}]}, 413, "M_TOO_LARGE"),
    ],
)  # fmt: skip
def test_refused_requests_create_nothing(
    users: Users, body: dict[str, Any], status: int, errcode: str
) -> None:
    refused(users, body, status, errcode)


def test_taken_alias_is_not_half_created_when_the_request_is_otherwise_bad(users: Users) -> None:
    # The alias check and the dry run both happen before anything is stored: a bad request
    # that names a free alias leaves it free.
    body = {"room_alias_name": "stays-free", "power_level_content_override": {"ban": 1.5}}
    refused(users, body, 400, "M_BAD_JSON")
    status, _ = users.alice.call("GET", f"directory/room/{quote('#stays-free:localhost')}")
    assert status == 404
    room_id = create(users, room_alias_name="stays-free")
    assert ok(users.alice.call("GET", f"directory/room/{quote('#stays-free:localhost')}")) == {
        "room_id": room_id,
        "servers": ["localhost"],
    }


def test_concurrent_creates_with_one_alias_make_one_room(users: Users) -> None:
    before = set(joined_and_invited(users.alice))
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(
            pool.map(lambda _: users.alice.create_room(room_alias_name="contended"), range(6))
        )
    made = [body["room_id"] for status, body in results if status == 200]
    assert len(made) == 1, results
    for status, body in results:
        if status != 200:
            assert (status, body["errcode"]) == (400, "M_ROOM_IN_USE"), body
    assert set(joined_and_invited(users.alice)) - before == set(made)
    alias = quote("#contended:localhost")
    assert ok(users.alice.call("GET", f"directory/room/{alias}"))["room_id"] == made[0]


def test_empty_invite_3pid_is_accepted(users: Users) -> None:
    assert create(users, invite_3pid=[])


def test_unauthenticated_create_room_is_401(server: SingleServer) -> None:
    status, body = MatrixClient(server.base_url).call("POST", "createRoom", {}, authed=False)
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")


def test_create_room_path_variants(users: Users, server: SingleServer) -> None:
    # r0 is served as well as v3.
    status, body = users.alice.call("POST", "/_matrix/client/r0/createRoom", {})
    assert status == 200 and body["room_id"].startswith("!")
    assert CLIENT_V3.endswith("v3")


# ------------------------------------------------------ default_room_version --


def _base_config() -> dict[str, Any]:
    return {"server_name": "hs.test", "data_dir": "/tmp/unused"}


def test_default_room_version_defaults_to_12_and_is_validated() -> None:
    assert parse_config(_base_config(), base_dir="/").default_room_version == "12"
    config = parse_config({**_base_config(), "default_room_version": "9"}, base_dir="/")
    assert config.default_room_version == "9"
    for bad in ("13", 12, ""):
        with pytest.raises(ConfigError) as e:
            parse_config({**_base_config(), "default_room_version": bad}, base_dir="/")
        assert e.value.key == "default_room_version"
