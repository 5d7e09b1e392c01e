"""Room upgrades (POST /rooms/{roomId}/upgrade) on the events writer.

The replacement room's create event names its `predecessor`; the transferable state is
copied (power levels with every member's level, join rules, history visibility, guest
access, name, topic, avatar, encryption, server ACL); the old room gets an
`m.room.tombstone` and, where the upgrader may change them, power levels that stop
ordinary members sending events or inviting.

Power levels are rewritten for the new version: values become plain integers (v10+
accepts nothing else), and where creators have infinite power (v12+) they are not
listed in `users`, while moving the other way old creators keep 100.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from homeserver.events.auth import get_send_level, get_user_power_level, room_creators
from homeserver.events.event import Event, StateKey
from homeserver.events.power_levels import LEVEL_DEFAULTS, level_map, top_level_levels
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version
from homeserver.events.validation import is_valid_user_id
from homeserver.handlers.event_creation import EventCreationHandler
from homeserver.http.errors import MatrixError, bad_param, forbidden
from storage.stores.directory import DirectoryStore
from storage.stores.events import EventStore

logger = logging.getLogger(__name__)

CREATE_KEY: StateKey = ("m.room.create", "")
POWER_LEVELS_KEY: StateKey = ("m.room.power_levels", "")
TOMBSTONE = "m.room.tombstone"
# Copied to the replacement room after its power levels, in this order.
TRANSFERRED_STATE = (
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
)
# The level old creators keep in a version where creators are not all-powerful.
CREATOR_LEVEL = 100


def convert_power_levels(
    content: Mapping[str, Any],
    old_rv: RoomVersion,
    new_rv: RoomVersion,
    old_creators: frozenset[str],
    new_creators: frozenset[str],
) -> dict[str, Any]:
    """The old room's power levels as valid content for the new room's version."""
    out: dict[str, Any] = {
        k: v for k, v in content.items() if k not in ("users", "events", "notifications")
    }
    out.update(top_level_levels(content, old_rv))
    for key in LEVEL_DEFAULTS:
        if key in out and not isinstance(out[key], int):
            del out[key]
    for key in ("events", "notifications"):
        if key in content:
            out[key] = level_map(content.get(key), old_rv)
    users = level_map(content.get("users"), old_rv)
    if old_rv.creators_have_infinite_power and not new_rv.creators_have_infinite_power:
        for creator in old_creators:
            users.setdefault(creator, CREATOR_LEVEL)
    if new_rv.creators_have_infinite_power:
        for creator in new_creators:
            users.pop(creator, None)
    out["users"] = users
    return out


class RoomUpgradeHandler:
    def __init__(
        self,
        events: EventCreationHandler,
        store: EventStore,
        directory: DirectoryStore | None = None,
    ) -> None:
        self.events = events
        self.store = store
        self.directory = directory

    async def upgrade_room(
        self, user_id: str, room_id: str, new_version: str, additional_creators: list[str] | None
    ) -> dict[str, Any]:
        new_rv = get_room_version(new_version) if new_version in KNOWN_ROOM_VERSIONS else None
        if new_rv is None:
            raise MatrixError(
                400, "M_UNSUPPORTED_ROOM_VERSION", f"Unsupported room version {new_version!r}"
            )
        for creator in additional_creators or ():
            if not is_valid_user_id(creator):
                raise bad_param(f"Invalid user ID in additional_creators: {creator!r}")
        old_rv = await self.events.room_version(room_id)
        state = {k: pe.event for k, pe in (await self.store.get_current_state(room_id)).items()}
        member = state.get(("m.room.member", user_id))
        if member is None or member.membership != "join":
            raise forbidden("You are not joined to this room")
        level = get_user_power_level(user_id, state)
        if level < get_send_level(TOMBSTONE, "", state.get(POWER_LEVELS_KEY)):
            raise forbidden(
                "You may not upgrade this room (m.room.tombstone is above your power level)"
            )
        old_create = state[CREATE_KEY]

        extremities = await self.store.get_forward_extremities(room_id)
        last_event_id = (
            max(extremities, key=lambda x: x[1])[0] if extremities else old_create.event_id
        )
        create_content: dict[str, Any] = {
            "room_version": new_rv.identifier,
            "predecessor": {"room_id": room_id, "event_id": last_event_id},
        }
        for key in ("type", "m.federate"):
            if key in old_create.content:
                create_content[key] = old_create.content[key]
        extra_creators = list(dict.fromkeys(c for c in additional_creators or () if c != user_id))
        if new_rv.creators_have_infinite_power and extra_creators:
            create_content["additional_creators"] = extra_creators
        create_event, _ = await self.events.create_room_event(new_rv, user_id, create_content)
        new_room_id = create_event.room_id
        await self.events.send(
            new_room_id, user_id, "m.room.member", {"membership": "join"}, state_key=user_id
        )

        await self._copy_state(user_id, state, old_rv, new_rv, create_event, new_room_id)
        await self._move_aliases(user_id, room_id, new_room_id, state)

        await self.events.send(
            room_id,
            user_id,
            TOMBSTONE,
            {"body": "This room has been replaced", "replacement_room": new_room_id},
            state_key="",
        )
        await self._restrict_old_room(user_id, room_id, state.get(POWER_LEVELS_KEY))
        return {"replacement_room": new_room_id}

    async def _copy_state(
        self,
        user_id: str,
        state: Mapping[StateKey, Event],
        old_rv: RoomVersion,
        new_rv: RoomVersion,
        new_create: Event,
        new_room_id: str,
    ) -> None:
        old_pl = state.get(POWER_LEVELS_KEY)
        pl = convert_power_levels(
            old_pl.content if old_pl is not None else {},
            old_rv,
            new_rv,
            room_creators(state[CREATE_KEY]),
            room_creators(new_create),
        )
        users: dict[str, int] = pl["users"]
        # The upgrader sends everything below; lift them for that if their level is short.
        needed = max(
            [
                pl.get("state_default", LEVEL_DEFAULTS["state_default"]),
                *pl.get("events", {}).values(),
            ],
            default=0,
        )
        boosted = None
        if not new_rv.creators_have_infinite_power:
            mine = users.get(user_id, pl.get("users_default", 0))
            if math.isinf(get_user_power_level(user_id, state)) and user_id not in users:
                mine = CREATOR_LEVEL
                users[user_id] = mine
            if mine < needed:
                boosted = {**pl, "users": {**users, user_id: needed}}
        await self.events.send(
            new_room_id, user_id, "m.room.power_levels", boosted or pl, state_key=""
        )
        for event_type in TRANSFERRED_STATE:
            event = state.get((event_type, ""))
            if event is None:
                continue
            try:
                await self.events.send(
                    new_room_id, user_id, event_type, dict(event.content), state_key=""
                )
            except MatrixError as e:
                # One untransferable event must not leave the upgrade half done.
                logger.warning(
                    "state not transferred on upgrade",
                    extra={"room_id": new_room_id, "type": event_type, "error": e.message},
                )
        if boosted is not None:
            await self.events.send(new_room_id, user_id, "m.room.power_levels", pl, state_key="")

    async def _move_aliases(
        self, user_id: str, room_id: str, new_room_id: str, state: Mapping[StateKey, Event]
    ) -> None:
        """Local aliases, the canonical alias and the directory listing follow the room."""
        if self.directory is None:
            return
        await self.directory.move_aliases(room_id, new_room_id)
        canonical = state.get(("m.room.canonical_alias", ""))
        if canonical is not None and canonical.content:
            for target, content in ((new_room_id, dict(canonical.content)), (room_id, {})):
                try:
                    await self.events.send(
                        target, user_id, "m.room.canonical_alias", content, state_key=""
                    )
                except MatrixError as e:
                    # E.g. an alias of another server, which cannot be checked here.
                    logger.warning(
                        "canonical alias not moved on upgrade",
                        extra={"room_id": target, "error": e.message},
                    )
        if await self.directory.get_room_published(room_id):
            await self.directory.set_room_published(new_room_id, True)
            await self.directory.set_room_published(room_id, False)

    async def _restrict_old_room(self, user_id: str, room_id: str, old_pl: Event | None) -> None:
        """Stop ordinary members talking or inviting in the old room, if the upgrader may."""
        content = dict(old_pl.content) if old_pl is not None else {}
        users_default = (
            top_level_levels(content, old_pl.room_version).get("users_default", 0) if old_pl else 0
        )
        restricted = max(50, users_default + 1)
        content["events_default"] = restricted
        content["invite"] = restricted
        try:
            await self.events.send(room_id, user_id, "m.room.power_levels", content, state_key="")
        except MatrixError as e:
            logger.info(
                "old room's power levels left as they were",
                extra={"room_id": room_id, "error": e.message},
            )
