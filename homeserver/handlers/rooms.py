"""Room creation (`POST /createRoom`) and membership changes (on the events writer).

A room is made of the events the request implies, in the order the spec gives:
create, the creator's join, power levels, the canonical alias, the preset's state,
`initial_state`, name and topic, then the invites. Everything is validated first and
the whole sequence is authorised in a dry run (built and checked against the auth rules
in memory) before the first event is persisted, so a bad request leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from homeserver.events.auth import AuthError, auth_types_for_event, check_auth_rules
from homeserver.events.builder import build_event, room_id_for_create_event
from homeserver.events.canonical import InvalidEventError
from homeserver.events.event import Event, StateKey
from homeserver.events.room_versions import (
    DEFAULT_ROOM_VERSION,
    KNOWN_ROOM_VERSIONS,
    RoomVersion,
)
from homeserver.events.validation import is_valid_user_id
from homeserver.handlers.directory import DirectoryHandler, check_canonical_alias_content
from homeserver.handlers.event_creation import EventCreationHandler
from homeserver.http.errors import MatrixError, bad_param, bad_type


@attrs.frozen(slots=True)
class Preset:
    join_rule: str
    history_visibility: str
    guest_access: str
    # Invitees get the creator's power (v1–11) or become additional creators (v12+).
    invitees_are_trusted: bool = False


# The spec's preset table (createRoom).
PRESETS: Mapping[str, Preset] = {
    "private_chat": Preset("invite", "shared", "can_join"),
    "trusted_private_chat": Preset("invite", "shared", "can_join", invitees_are_trusted=True),
    "public_chat": Preset("public", "shared", "forbidden"),
}

CREATOR_POWER_LEVEL = 100
# v12+: tombstones (room upgrades) need more than any admin short of a creator.
V12_TOMBSTONE_LEVEL = 150


@attrs.frozen(slots=True)
class StateToSend:
    type: str
    state_key: str
    content: Mapping[str, Any]


@attrs.frozen(slots=True)
class RoomPlan:
    """Everything a createRoom request implies, validated, before anything is stored."""

    room_version: RoomVersion
    create_content: Mapping[str, Any]
    # Steps 2–8 of the spec's order, after the create event.
    events: tuple[StateToSend, ...]
    alias: str | None
    publish: bool


def default_power_levels(
    creator: str, room_version: RoomVersion, trusted: Sequence[str]
) -> dict[str, Any]:
    users: dict[str, int] = {}
    if not room_version.creators_have_infinite_power:
        # v12+ creators have infinite power and may not be listed.
        users[creator] = CREATOR_POWER_LEVEL
        for user in trusted:
            users[user] = CREATOR_POWER_LEVEL
    tombstone = (
        V12_TOMBSTONE_LEVEL if room_version.creators_have_infinite_power else CREATOR_POWER_LEVEL
    )
    return {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": tombstone,
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


def topic_content(topic: str) -> dict[str, Any]:
    """`m.room.topic` with the plain-text topic also as a `text/plain` m.topic block."""
    return {"topic": topic, "m.topic": {"m.text": [{"mimetype": "text/plain", "body": topic}]}}


def _user_ids(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
        raise bad_type(f"{name} must be a list of user IDs")
    for user_id in value:
        if not is_valid_user_id(user_id):
            raise bad_param(f"Invalid user ID {user_id!r} in {name}")
    return list(dict.fromkeys(value))


class RoomHandler:
    def __init__(
        self,
        events: EventCreationHandler,
        directory: DirectoryHandler,
        default_room_version: str = DEFAULT_ROOM_VERSION,
    ) -> None:
        self.events = events
        self.directory = directory
        self.default_room_version = default_room_version

    # -- createRoom -----------------------------------------------------------------------

    async def create_room(self, creator: str, body: dict[str, Any]) -> dict[str, Any]:
        plan = self.plan_room(creator, body)
        await self._dry_run(creator, plan)
        if plan.alias is None:
            room_id = await self._create(creator, plan)
        else:
            taken = MatrixError(400, "M_ROOM_IN_USE", f"Room alias {plan.alias} is already taken")
            async with self.directory.reserve_alias(plan.alias, taken):
                room_id = await self._create(creator, plan)
        return {"room_id": room_id}

    async def _create(self, creator: str, plan: RoomPlan) -> str:
        create_event, _ = await self.events.create_room_event(
            plan.room_version, creator, plan.create_content
        )
        room_id = room_id_for_create_event(create_event)
        if plan.alias is not None:
            # Before the m.room.canonical_alias event, whose check resolves it.
            await self.directory.store_reserved_alias(plan.alias, room_id, creator)
        for ev in plan.events:
            await self.events.send(room_id, creator, ev.type, ev.content, state_key=ev.state_key)
        if plan.publish:
            await self.directory.publish(room_id, True)
        return room_id

    def plan_room(self, creator: str, body: Mapping[str, Any]) -> RoomPlan:
        """Validates the request into the events it implies; raises MatrixError (400)."""
        version_id = body.get("room_version", self.default_room_version)
        if not isinstance(version_id, str) or version_id not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(
                400, "M_UNSUPPORTED_ROOM_VERSION", f"Unsupported room version {version_id!r}"
            )
        rv = KNOWN_ROOM_VERSIONS[version_id]

        visibility = body.get("visibility", "private")
        if visibility not in ("public", "private"):
            raise bad_param("visibility must be 'public' or 'private'")
        preset_name = body.get("preset")
        if preset_name is None:
            preset_name = "public_chat" if visibility == "public" else "private_chat"
        if not isinstance(preset_name, str) or preset_name not in PRESETS:
            raise bad_param(f"Unknown preset {preset_name!r}")
        preset = PRESETS[preset_name]

        invites = _user_ids(body.get("invite", []), "invite")
        invite_3pid = body.get("invite_3pid", [])
        if not isinstance(invite_3pid, list):
            raise bad_type("invite_3pid must be a list")
        if invite_3pid:
            raise MatrixError(
                400, "M_UNKNOWN", "3pid invites not supported: no identity server is configured"
            )
        is_direct = body.get("is_direct", False)
        if not isinstance(is_direct, bool):
            raise bad_type("is_direct must be a boolean")
        for key in ("name", "topic"):
            if key in body and not isinstance(body[key], str):
                raise bad_type(f"{key} must be a string")

        creation_content = body.get("creation_content", {})
        if not isinstance(creation_content, dict):
            raise bad_type("creation_content must be an object")
        initial_state = self._initial_state(body.get("initial_state", []))
        pl_override = body.get("power_level_content_override", {})
        if not isinstance(pl_override, dict):
            raise bad_type("power_level_content_override must be an object")
        alias = None
        if body.get("room_alias_name") is not None:
            alias = self.directory.new_local_alias(body["room_alias_name"])

        trusted = invites if preset.invitees_are_trusted else []
        create_content = self._create_content(creator, rv, creation_content, trusted)
        power_levels = {**default_power_levels(creator, rv, trusted), **pl_override}

        # Spec order, steps 2–8. initial_state overrides the preset's state of the same
        # (type, state_key); name and topic override initial_state's.
        from_initial_state = {(ev.type, ev.state_key) for ev in initial_state}
        from_fields = {(f"m.room.{key}", "") for key in ("name", "topic") if key in body}
        events: list[StateToSend] = [
            StateToSend("m.room.member", creator, {"membership": "join"}),
            StateToSend("m.room.power_levels", "", power_levels),
        ]
        if alias is not None:
            events.append(StateToSend("m.room.canonical_alias", "", {"alias": alias}))
        preset_state = [
            StateToSend("m.room.join_rules", "", {"join_rule": preset.join_rule}),
            StateToSend(
                "m.room.history_visibility", "", {"history_visibility": preset.history_visibility}
            ),
            StateToSend("m.room.guest_access", "", {"guest_access": preset.guest_access}),
        ]
        events += [ev for ev in preset_state if (ev.type, ev.state_key) not in from_initial_state]
        events += [ev for ev in initial_state if (ev.type, ev.state_key) not in from_fields]
        if "name" in body:
            events.append(StateToSend("m.room.name", "", {"name": body["name"]}))
        if "topic" in body:
            events.append(StateToSend("m.room.topic", "", topic_content(body["topic"])))
        for user_id in invites:
            content: dict[str, Any] = {"membership": "invite"}
            if is_direct:
                content["is_direct"] = True
            events.append(StateToSend("m.room.member", user_id, content))
        return RoomPlan(rv, create_content, tuple(events), alias, visibility == "public")

    @staticmethod
    def _initial_state(raw: Any) -> list[StateToSend]:
        if not isinstance(raw, list):
            raise bad_type("initial_state must be a list of {type, state_key, content} objects")
        out = []
        for ev in raw:
            if (
                not isinstance(ev, dict)
                or not isinstance(ev.get("type"), str)
                or not isinstance(ev.get("content"), dict)
                or not isinstance(ev.get("state_key", ""), str)
            ):
                raise bad_type("initial_state must be a list of {type, state_key, content} objects")
            if ev["type"] == "m.room.create":
                raise MatrixError(
                    400, "M_INVALID_ROOM_STATE", "initial_state may not contain m.room.create"
                )
            out.append(StateToSend(ev["type"], ev.get("state_key", ""), dict(ev["content"])))
        return out

    @staticmethod
    def _create_content(
        creator: str, rv: RoomVersion, creation_content: Mapping[str, Any], trusted: Sequence[str]
    ) -> dict[str, Any]:
        content = dict(creation_content)
        # The server sets `creator` (where the version has one) and `room_version`.
        content.pop("creator", None)
        if not rv.implicit_room_creator:
            content["creator"] = creator
        content["room_version"] = rv.identifier
        if rv.creators_have_infinite_power:
            extra = content.get("additional_creators", [])
            extra = _user_ids(extra, "creation_content.additional_creators")
            # trusted_private_chat: invitees join the creators (spec, v1.16+), deduplicated.
            combined = list(dict.fromkeys([*extra, *trusted]))
            if combined:
                content["additional_creators"] = combined
        return content

    async def _dry_run(self, creator: str, plan: RoomPlan) -> None:
        """Builds and authorises the room's events in memory, persisting nothing.

        A request whose events the auth rules would refuse part-way (say, power levels
        that stop the creator from naming the room) is answered 400 M_INVALID_ROOM_STATE
        before anything exists.
        """
        rv = plan.room_version
        now = self.events.clock_ms()

        def build(**kwargs: Any) -> Event:
            try:
                return build_event(
                    rv,
                    server_name=self.events.server_name,
                    signing_key=self.events.signing_key,
                    origin_server_ts=now,
                    sender=creator,
                    **kwargs,
                )
            except InvalidEventError as e:
                message = str(e)
                if "too large" in message or "bytes" in message:
                    raise MatrixError(413, "M_TOO_LARGE", f"Event too large: {message}") from None
                raise MatrixError(400, "M_BAD_JSON", f"Invalid event: {message}") from None

        def authorise(event: Event, auth_state: Mapping[StateKey, Event]) -> None:
            try:
                check_auth_rules(event, auth_state)
            except AuthError as e:
                raise MatrixError(
                    400,
                    "M_INVALID_ROOM_STATE",
                    f"The room's initial state is not allowed: {event.type} "
                    f"({event.state_key!r}): {e.reason}",
                ) from None

        legacy_room_id = (
            None if rv.room_id_is_create_event_id else f"!dryrun:{self.events.server_name}"
        )
        create = build(
            type="m.room.create",
            state_key="",
            content=plan.create_content,
            room_id=legacy_room_id,
            prev_event_ids=[],
            auth_event_ids=[],
            depth=1,
        )
        authorise(create, {})
        room_id = room_id_for_create_event(create)
        state: dict[StateKey, Event] = {("m.room.create", ""): create}

        async def resolve(alias: str) -> str | None:
            if alias == plan.alias:
                return room_id
            return await self.directory.resolve_alias(alias)

        prev = create
        for ev in plan.events:
            keys = auth_types_for_event(rv, ev.type, creator, ev.state_key, ev.content)
            present = [k for k in keys if k in state]
            event = build(
                type=ev.type,
                state_key=ev.state_key,
                content=ev.content,
                room_id=room_id,
                prev_event_ids=[prev.event_id],
                auth_event_ids=[state[k].event_id for k in present],
                depth=prev.depth + 1,
            )
            auth_state = {k: state[k] for k in present}
            auth_state.setdefault(("m.room.create", ""), create)
            authorise(event, auth_state)
            if ev.type == "m.room.canonical_alias" and ev.state_key == "":
                await check_canonical_alias_content(room_id, ev.content, resolve)
            state[event.key] = event
            prev = event
