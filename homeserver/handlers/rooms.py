"""Room creation and membership changes (on the events writer)."""

from __future__ import annotations

from typing import Any

from homeserver.events.canonical import InvalidEventError, check_canonical_json
from homeserver.events.room_versions import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS, get_room_version
from homeserver.events.validation import is_valid_user_id
from homeserver.handlers.event_creation import EventCreationHandler
from homeserver.http.errors import MatrixError, bad_param, bad_type

PRESETS = {
    "private_chat": {"join_rule": "invite", "history_visibility": "shared", "guest_access": "can_join"},
    "trusted_private_chat": {"join_rule": "invite", "history_visibility": "shared", "guest_access": "can_join"},
    "public_chat": {"join_rule": "public", "history_visibility": "shared", "guest_access": None},
}


def default_power_levels(creator: str, creators_are_implicit: bool, trusted: list[str]) -> dict[str, Any]:
    users: dict[str, int] = {}
    if not creators_are_implicit:
        users[creator] = 100
        for user in trusted:
            users[user] = 100
    return {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "notifications": {"room": 50},
    }


class RoomHandler:
    def __init__(self, events: EventCreationHandler, default_room_version: str = DEFAULT_ROOM_VERSION) -> None:
        self.events = events
        self.default_room_version = default_room_version

    async def create_room(self, creator: str, body: dict[str, Any]) -> dict[str, Any]:
        version_id = body.get("room_version", self.default_room_version)
        if not isinstance(version_id, str) or version_id not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", f"Unsupported room version {version_id!r}")
        rv = get_room_version(version_id)
        assert rv is not None
        visibility = body.get("visibility", "private")
        if visibility not in ("public", "private"):
            raise bad_param("visibility must be 'public' or 'private'")
        preset_name = body.get("preset") or ("public_chat" if visibility == "public" else "private_chat")
        if not isinstance(preset_name, str) or preset_name not in PRESETS:
            raise bad_param(f"Unknown preset {preset_name!r}")
        preset = PRESETS[preset_name]
        invites = body.get("invite", [])
        if not isinstance(invites, list) or not all(isinstance(u, str) for u in invites):
            raise bad_type("invite must be a list of user IDs")
        for user_id in invites:
            if not is_valid_user_id(user_id):
                raise bad_param(f"Invalid user ID {user_id!r}")
        creation_content = body.get("creation_content", {})
        if not isinstance(creation_content, dict):
            raise bad_type("creation_content must be an object")
        initial_state = body.get("initial_state", [])
        # Everything is checked before the first event is persisted: no half-created rooms.
        if not isinstance(initial_state, list) or not all(
            isinstance(e, dict)
            and isinstance(e.get("type"), str)
            and isinstance(e.get("content", {}), dict)
            and isinstance(e.get("state_key", ""), str)
            for e in initial_state
        ):
            raise bad_type("initial_state must be a list of {type, state_key, content} objects")
        pl_override = body.get("power_level_content_override", {})
        if not isinstance(pl_override, dict):
            raise bad_type("power_level_content_override must be an object")
        for key in ("name", "topic"):
            if key in body and not isinstance(body[key], str):
                raise bad_type(f"{key} must be a string")

        trusted = invites if preset_name == "trusted_private_chat" else []
        pl = default_power_levels(creator, rv.creators_have_infinite_power, trusted)
        pl.update(pl_override)
        try:
            # Contents that cannot be canonical JSON would fail after the room exists.
            for state_content in [pl, *(ev.get("content", {}) for ev in initial_state)]:
                check_canonical_json(state_content, strict=rv.strict_canonicaljson)
        except InvalidEventError as e:
            raise bad_type(f"Invalid event content: {e}") from None
        create_content = {**creation_content, "room_version": rv.identifier}
        if rv.creators_have_infinite_power and trusted:
            create_content["additional_creators"] = list(trusted)
        create_event, _ = await self.events.create_room_event(rv, creator, create_content)
        room_id = create_event.room_id

        async def send_state(event_type: str, content: dict[str, Any], state_key: str = "") -> int:
            _, pos = await self.events.send(room_id, creator, event_type, content, state_key=state_key)
            return pos

        await send_state("m.room.member", {"membership": "join"}, creator)
        await send_state("m.room.power_levels", pl)
        await send_state("m.room.join_rules", {"join_rule": preset["join_rule"]})
        await send_state("m.room.history_visibility", {"history_visibility": preset["history_visibility"]})
        if preset["guest_access"]:
            await send_state("m.room.guest_access", {"guest_access": preset["guest_access"]})
        for ev in initial_state:
            state_key = ev.get("state_key", "")
            if not isinstance(state_key, str):
                raise bad_type("initial_state state_key must be a string")
            await send_state(ev["type"], dict(ev.get("content", {})), state_key)
        if "name" in body:
            await send_state("m.room.name", {"name": body["name"]})
        if "topic" in body:
            await send_state("m.room.topic", {"topic": body["topic"]})
        for user_id in invites:
            content: dict[str, Any] = {"membership": "invite"}
            if body.get("is_direct"):
                content["is_direct"] = True
            await send_state("m.room.member", content, user_id)
        return {"room_id": room_id}

    async def update_membership(
        self, sender: str, room_id: str, target: str, membership: str, reason: str | None = None
    ) -> dict[str, Any]:
        content: dict[str, Any] = {"membership": membership}
        if reason is not None:
            content["reason"] = reason
        event_id, _ = await self.events.send(room_id, sender, "m.room.member", content, state_key=target)
        return {"event_id": event_id}
